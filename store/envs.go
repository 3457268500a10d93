package store

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"

	"spool/rpc"
)

// A job's spec carries the environment of the shell that submitted it: about a
// hundred variables, several KiB, the same for every job that shell submits. The
// store keeps each distinct environment (a spec's env map) once, in bEnvs, keyed by
// the SHA-256 of its canonical encoding (encoding/json's, which sorts the names),
// with the number of stored specs that refer to it in bEnvRefs. A stored spec
// with a non-empty env is then the byte specEnvRef, the 32-byte key, and the JSON
// of the spec without its env (env null); every other stored spec is the whole
// spec's JSON, which starts with '{'. Specs written before schema 2 are all of
// that second kind and are read as they are: nothing is rewritten on open.

// specEnvRef starts a stored spec whose env is in bEnvs.
const specEnvRef = 0x01

// envKeySize is the size of a key of bEnvs: a SHA-256.
const envKeySize = sha256.Size

// storedSpec is a spec encoded as the store writes it.
type storedSpec struct {
	// raw is the value of bSpecs.
	raw []byte
	// env is the canonical JSON of the spec's env, and key its SHA-256, when
	// the env is stored apart (non-empty); env is nil otherwise.
	env []byte
	key [envKeySize]byte
}

// encodeSpec encodes sp as the store writes it: its env apart when it has one.
func encodeSpec(sp *rpc.Spec) (storedSpec, error) {
	if len(sp.Env) == 0 {
		raw, err := json.Marshal(sp)
		if err != nil {
			return storedSpec{}, err
		}
		return storedSpec{raw: raw}, nil
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
	ss := storedSpec{env: env, key: sha256.Sum256(env)}
	ss.raw = make([]byte, 0, 1+envKeySize+len(body))
	ss.raw = append(ss.raw, specEnvRef)
	ss.raw = append(ss.raw, ss.key[:]...)
	ss.raw = append(ss.raw, body...)
	return ss, nil
}

// envRef splits a stored spec into the key of its env in bEnvs (nil when its env
// is inline) and the spec's JSON. It fails on a value of neither layout.
func envRef(raw []byte) (key, body []byte, err error) {
	switch {
	case len(raw) > 0 && raw[0] == '{':
		return nil, raw, nil
	case len(raw) > 1+envKeySize && raw[0] == specEnvRef:
		return raw[1 : 1+envKeySize], raw[1+envKeySize:], nil
	default:
		return nil, nil, fmt.Errorf("stored spec of %d bytes is of no known layout", len(raw))
	}
}

// envCache keeps the environments a transaction decoded, by key, so that the jobs
// of one shell decode theirs once; each job gets a copy of its own.
type envCache map[[envKeySize]byte]map[string]string

// decodeSpec decodes a stored spec, fetching its env from bEnvs when it is there.
// cache may be nil.
func (b *txb) decodeSpec(raw []byte, cache envCache) (*rpc.Spec, error) {
	key, body, err := envRef(raw)
	if err != nil {
		return nil, err
	}
	var spec rpc.Spec
	if err := b.decode(body, &spec); err != nil {
		return nil, err
	}
	if key == nil {
		return &spec, nil
	}
	var k [envKeySize]byte
	copy(k[:], key)
	if env, ok := cache[k]; ok {
		spec.Env = maps.Clone(env)
		return &spec, nil
	}
	envJSON := b.envs.Get(key)
	if envJSON == nil {
		return nil, fmt.Errorf("its environment %s is not stored", hex.EncodeToString(key))
	}
	var env map[string]string
	if err := b.decode(envJSON, &env); err != nil {
		return nil, fmt.Errorf("decode environment %s: %w", hex.EncodeToString(key), err)
	}
	if cache != nil {
		cache[k] = env
		env = maps.Clone(env)
	}
	spec.Env = env
	return &spec, nil
}

// envDeltas accumulates, within one call, the changes of the reference counts of
// environments, with the JSON of those that new specs refer to.
type envDeltas struct {
	d    map[[envKeySize]byte]int64
	json map[[envKeySize]byte][]byte
	// order is the keys in the order first seen, so that writes are ordered.
	order [][envKeySize]byte
}

// add counts n more (or fewer, when negative) references to the env of key;
// envJSON is its canonical JSON when n > 0.
func (e *envDeltas) add(key [envKeySize]byte, envJSON []byte, n int64) {
	if e.d == nil {
		e.d = make(map[[envKeySize]byte]int64)
		e.json = make(map[[envKeySize]byte][]byte)
	}
	if _, ok := e.d[key]; !ok {
		e.order = append(e.order, key)
	}
	e.d[key] += n
	if envJSON != nil {
		e.json[key] = envJSON
	}
}

// write applies the changes: an environment gets stored with its first reference
// and deleted with its last.
func (e *envDeltas) write(b *txb) error {
	for _, key := range e.order {
		d := e.d[key]
		if d == 0 {
			continue
		}
		var n int64
		if v := b.envRefs.Get(key[:]); v != nil {
			n = btoi(v)
		}
		switch {
		case n+d < 0:
			return fmt.Errorf("environment %s: %d references, %d fewer asked", hex.EncodeToString(key[:]), n, -d)
		case n+d == 0:
			if err := b.envRefs.Delete(key[:]); err != nil {
				return fmt.Errorf("delete references of environment %s: %w", hex.EncodeToString(key[:]), err)
			}
			if err := b.envs.Delete(key[:]); err != nil {
				return fmt.Errorf("delete environment %s: %w", hex.EncodeToString(key[:]), err)
			}
			continue
		case n == 0:
			envJSON := e.json[key]
			if envJSON == nil {
				return fmt.Errorf("environment %s: no references and none to store", hex.EncodeToString(key[:]))
			}
			if err := b.envs.Put(key[:], envJSON); err != nil {
				return fmt.Errorf("put environment %s: %w", hex.EncodeToString(key[:]), err)
			}
		default:
			// A different content under the same SHA-256 would hand one
			// job another's environment: refuse it rather than trust it.
			if envJSON := e.json[key]; envJSON != nil && !bytes.Equal(b.envs.Get(key[:]), envJSON) {
				return fmt.Errorf("environment %s: stored content differs from one with the same hash", hex.EncodeToString(key[:]))
			}
		}
		if err := b.envRefs.Put(key[:], itob(n+d)); err != nil {
			return fmt.Errorf("update references of environment %s: %w", hex.EncodeToString(key[:]), err)
		}
	}
	return nil
}

// release counts one reference fewer to the env of the stored spec of job id, if
// it has one apart.
func (b *txb) release(id int64, e *envDeltas) error {
	raw := b.specs.Get(itob(id))
	if raw == nil {
		return nil
	}
	key, _, err := envRef(raw)
	if err != nil {
		return fmt.Errorf("spec of job %d: %w", id, err)
	}
	if key != nil {
		var k [envKeySize]byte
		copy(k[:], key)
		e.add(k, nil, -1)
	}
	return nil
}

// EnvRefs is the reference count of each stored environment, in key order: how
// many stored specs share each distinct environment (storetest.EnvCounter).
func (s *Store) EnvRefs(ctx context.Context) ([]int64, error) {
	refs := []int64{}
	err := s.view(ctx, func(b *txb) error {
		return b.envRefs.ForEach(func(_, v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("reference count of %d bytes", len(v))
			}
			refs = append(refs, btoi(v))
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return refs, nil
}
