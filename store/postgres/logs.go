package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"spool/rpc"
)

// Logs are rows of spool_logs, one per chunk a daemon shipped: the chunk's
// bytes at offset off of the log of (job, step, stream). The chunks of a log
// follow each other without gaps or overlaps (AppendLog adds only at the
// end); its size is the end of its last chunk.
// Removing a job deletes its chunks in the same transaction (remove).

// streamCode is a log stream's number in spool_logs.
func streamCode(stream string) (int16, error) {
	switch stream {
	case "", rpc.StreamAll:
		return 0, nil
	case rpc.StreamStderr:
		return 1, nil
	}
	return 0, rpc.InvalidParams("stream", fmt.Sprintf("unknown log stream %q", stream))
}

// AppendLog stores data at offset off of a step's log in one statement,
// when off is the log's end. A chunk at an offset already stored is not
// stored (its bytes are there: a daemon sends a chunk again after a lost
// answer), so that chunks never overlap, even those of a daemon that wrote
// late after another took its job; one beyond the end, which would leave a
// gap, is refused. A chunk of a job that is no longer stored (removed
// meanwhile) is dropped.
func (s *Store) AppendLog(ctx context.Context, job int64, step int, stream string, off int64, data []byte) error {
	code, err := streamCode(stream)
	if err != nil {
		return err
	}
	if len(data) == 0 {
		return nil
	}
	var size int64
	var known bool
	err = s.pool.QueryRow(ctx, `
WITH cur AS (
	SELECT coalesce((SELECT off + length(data) FROM spool_logs
		WHERE job = $1 AND step = $2 AND stream = $3 ORDER BY off DESC LIMIT 1), 0) AS size
), ins AS (
	INSERT INTO spool_logs (job, step, stream, off, data)
	SELECT $1, $2, $3, $4, $5 FROM cur
	WHERE cur.size = $4 AND EXISTS (SELECT 1 FROM spool_jobs WHERE id = $1)
	ON CONFLICT DO NOTHING
)
SELECT size, EXISTS (SELECT 1 FROM spool_jobs WHERE id = $1) FROM cur`, job, step, code, off, data).Scan(&size, &known)
	if err != nil {
		return rpc.Storage(fmt.Errorf("append to the log of job %d step %d: %w", job, step, err))
	}
	if known && off > size {
		return rpc.Storage(fmt.Errorf("append to the log of job %d step %d at %d: it holds %d bytes", job, step, off, size))
	}
	return nil
}

// ReadLog reads up to limit bytes of a step's log from off, and the log's
// size. Both queries go in one round trip, the size after the data: the
// size read is never less than the end of the data read. Only the parts of
// the chunks within the range asked leave the server.
func (s *Store) ReadLog(ctx context.Context, job int64, step int, stream string, off int64, limit int) ([]byte, int64, error) {
	code, err := streamCode(stream)
	if err != nil {
		return nil, 0, err
	}
	if off < 0 || limit < 0 {
		return nil, 0, rpc.InvalidParams("offset", "offset and limit must not be negative")
	}
	b := &pgx.Batch{}
	var data []byte
	if limit > 0 {
		end := off + int64(limit)
		// The chunk that holds off (the last one starting at or before it),
		// then those that start before the end asked; each cut to the range.
		b.Queue(`
SELECT greatest(off, $4), substring(data FROM (greatest(off, $4) - off + 1)::int FOR (least(off + length(data), $5) - greatest(off, $4))::int)
FROM spool_logs
WHERE job = $1 AND step = $2 AND stream = $3 AND off < $5 AND off >= coalesce(
	(SELECT max(off) FROM spool_logs WHERE job = $1 AND step = $2 AND stream = $3 AND off <= $4), 0)
	AND off + length(data) > $4
ORDER BY off`, job, step, code, off, end).Query(func(rows pgx.Rows) error {
			var at int64
			var chunk []byte
			_, err := pgx.ForEachRow(rows, []any{&at, &chunk}, func() error {
				if at == off+int64(len(data)) {
					data = append(data, chunk...)
				}
				return nil
			})
			return err
		})
	}
	var size int64
	b.Queue(`
SELECT coalesce((SELECT off + length(data) FROM spool_logs
	WHERE job = $1 AND step = $2 AND stream = $3 ORDER BY off DESC LIMIT 1), 0)`,
		job, step, code).QueryRow(func(row pgx.Row) error { return row.Scan(&size) })
	if err := s.pool.SendBatch(ctx, b).Close(); err != nil {
		return nil, 0, rpc.Storage(fmt.Errorf("read the log of job %d step %d: %w", job, step, err))
	}
	if data == nil {
		return []byte{}, size, nil
	}
	return data, max(size, off+int64(len(data))), nil
}
