package postgres

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"

	"github.com/jackc/pgx/v5"

	"spool/rpc"
)

// A job's spec carries the environment of the shell that submitted it: about a
// hundred variables, several KiB, the same for every job that shell submits.
// The store keeps each distinct environment once, in spool_envs, keyed by the
// SHA-256 of its canonical JSON (encoding/json's, which sorts the names), with
// the number of jobs that refer to it. A stored spec with an environment is
// then the byte envRefByte, the key, and the spec's JSON without its env; the
// job's env_key column names the row (a join reads it back). A spec without
// an environment is its JSON, which starts with '{'. Two stored specs are
// equal exactly when the specs are, environments included.

// envRefByte starts a stored spec whose environment is in spool_envs.
const envRefByte = 0x01

// storedSpec is a spec as the store writes it.
type storedSpec struct {
	raw []byte
	// env is the environment's canonical JSON, and key its SHA-256, when
	// the spec has one; nil otherwise.
	env []byte
	key []byte
}

// encodeSpec encodes sp as the store writes it.
func encodeSpec(sp *rpc.Spec) (storedSpec, error) {
	if len(sp.Env) == 0 {
		raw, err := json.Marshal(sp)
		return storedSpec{raw: raw}, err
	}
	env, err := json.Marshal(sp.Env)
	if err != nil {
		return storedSpec{}, fmt.Errorf("env: %w", err)
	}
	rest := *sp
	rest.Env = nil
	body, err := json.Marshal(&rest)
	if err != nil {
		return storedSpec{}, err
	}
	sum := sha256.Sum256(env)
	raw := make([]byte, 0, 1+len(sum)+len(body))
	raw = append(append(append(raw, envRefByte), sum[:]...), body...)
	return storedSpec{raw: raw, env: env, key: sum[:]}, nil
}

// decodeSpec decodes a stored spec; env is its environment's JSON, read
// from spool_envs, for a spec that refers to one.
func decodeSpec(raw, env []byte) (*rpc.Spec, error) {
	body := raw
	if len(raw) > 0 && raw[0] == envRefByte {
		if len(raw) < 1+sha256.Size {
			return nil, fmt.Errorf("stored spec of %d bytes is cut", len(raw))
		}
		body = raw[1+sha256.Size:]
		if env == nil {
			return nil, fmt.Errorf("the environment of a stored spec is missing")
		}
	}
	var sp rpc.Spec
	if err := json.Unmarshal(body, &sp); err != nil {
		return nil, fmt.Errorf("decode spec: %w", err)
	}
	if env != nil {
		if err := json.Unmarshal(env, &sp.Env); err != nil {
			return nil, fmt.Errorf("decode spec env: %w", err)
		}
	}
	return &sp, nil
}

// specCols reads a job's stored spec and its environment, in a query on
// spool_jobs.
const specCols = "spec, (SELECT e.env FROM spool_envs e WHERE e.key = spool_jobs.env_key)"

// queueEnvs adds to b the statement that counts the new jobs' references to
// their environments, storing the environments not yet stored.
func (w *writer) queueEnvs(b *pgx.Batch) {
	if len(w.envs) == 0 {
		return
	}
	var keys, envs [][]byte
	var refs []int64
	for k, e := range w.envs {
		keys = append(keys, []byte(k))
		envs = append(envs, e.env)
		refs = append(refs, e.refs)
	}
	b.Queue(`INSERT INTO spool_envs (key, env, refs) SELECT * FROM unnest($1::bytea[], $2::bytea[], $3::bigint[])
		ON CONFLICT (key) DO UPDATE SET refs = spool_envs.refs + excluded.refs`, keys, envs, refs)
}

// envUse is an environment the writer's new jobs refer to, and how many.
type envUse struct {
	env  []byte
	refs int64
}

// EnvRefs is the reference count of each stored environment, in key order
// (storetest.EnvCounter).
func (s *Store) EnvRefs(ctx context.Context) ([]int64, error) {
	rows, err := s.pool.Query(ctx, "SELECT refs FROM spool_envs ORDER BY key")
	if err != nil {
		return nil, rpc.Storage(fmt.Errorf("read environments: %w", err))
	}
	refs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, rpc.Storage(fmt.Errorf("read environments: %w", err))
	}
	if refs == nil {
		refs = []int64{}
	}
	return refs, nil
}
