package postgres_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/matryer/is"

	"spool/daemon"
	"spool/rpc"
	"spool/store/postgres"
	"spool/store/storetest"
)

var _ daemon.LogStore = (*postgres.Store)(nil)

// submitOne stores a queued job and returns its id.
func submitOne(t *testing.T, s *postgres.Store) int64 {
	t.Helper()
	recs, _, err := s.Submit(context.Background(), []rpc.NewJob{storetest.NewJob("job", storetest.Spec("logs"), time.Now())})
	if err != nil {
		t.Fatalf("submit: %v", err)
	}
	return recs[0].ID
}

// logRows counts the chunks stored for a job.
func logRows(t *testing.T, dsn string, job int64) int {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM spool_logs WHERE job = $1", job).Scan(&n); err != nil {
		t.Fatalf("count chunks: %v", err)
	}
	return n
}

// TestLogs: chunks appended at their offsets read back as one log, from any
// offset and for any limit, with the log's size; a chunk sent again at an
// offset already stored changes nothing; the streams are apart; removing the
// job frees its chunks.
func TestLogs(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	dsn := servers.DB(t)
	s := open(t, dsn)
	id := submitOne(t, s)

	data, size, err := s.ReadLog(ctx, id, 0, rpc.StreamAll, 0, 100)
	is.NoErr(err)
	is.Equal(len(data), 0) // nothing stored yet
	is.Equal(size, int64(0))

	var want []byte
	for i, chunk := range []string{"line 1\n", "line 2\nline", " 3\n", string(bytes.Repeat([]byte("x"), 300<<10))} {
		is.NoErr(s.AppendLog(ctx, id, 0, rpc.StreamAll, int64(len(want)), []byte(chunk))) // append
		want = append(want, chunk...)
		if i == 1 {
			// Sent again after a lost answer, even grown since: kept as stored.
			is.NoErr(s.AppendLog(ctx, id, 0, rpc.StreamAll, 7, []byte("line 2\nline 3\n")))
		}
	}
	is.NoErr(s.AppendLog(ctx, id, 0, rpc.StreamAll, 0, []byte("other bytes"))) // idempotent at 0 too
	is.NoErr(s.AppendLog(ctx, id, 0, rpc.StreamAll, 3, []byte("late")))        // a chunk within the log: not stored
	err = s.AppendLog(ctx, id, 0, rpc.StreamAll, int64(len(want))+1, []byte("gap"))
	is.True(err != nil)                                                      // a chunk past the end is refused
	is.NoErr(s.AppendLog(ctx, id, 0, rpc.StreamStderr, 0, []byte("oops\n"))) // the stderr log
	is.NoErr(s.AppendLog(ctx, id, 1, rpc.StreamAll, 0, []byte("step 1\n")))  // another step

	all, size, err := s.ReadLog(ctx, id, 0, rpc.StreamAll, 0, 1<<20)
	is.NoErr(err)
	is.Equal(size, int64(len(want))) // the size is the bytes appended
	is.Equal(string(all), string(want))
	for _, r := range []struct{ off, limit int }{{0, 1}, {0, 7}, {3, 10}, {7, 11}, {16, 5}, {17, 3}, {18, 300 << 10}, {len(want) - 5, 100}, {len(want), 10}, {len(want) + 5, 10}} {
		got, size, err := s.ReadLog(ctx, id, 0, rpc.StreamAll, int64(r.off), r.limit)
		is.NoErr(err)
		is.Equal(size, int64(len(want)))
		end := min(r.off+r.limit, len(want))
		if r.off >= len(want) {
			is.Equal(len(got), 0) // past the end: nothing
			continue
		}
		is.Equal(string(got), string(want[r.off:end])) // the range asked, across chunks
	}
	_, size, err = s.ReadLog(ctx, id, 0, rpc.StreamAll, 0, 0)
	is.NoErr(err)
	is.Equal(size, int64(len(want))) // the size alone

	errLog, size, err := s.ReadLog(ctx, id, 0, rpc.StreamStderr, 0, 100)
	is.NoErr(err)
	is.Equal(string(errLog), "oops\n") // the streams are apart
	is.Equal(size, int64(5))
	step1, _, err := s.ReadLog(ctx, id, 1, "", 0, 100)
	is.NoErr(err)
	is.Equal(string(step1), "step 1\n") // and the steps ("" is the merged log)

	_, _, err = s.ReadLog(ctx, id, 0, "stdout", 0, 10)
	is.True(err != nil) // an unknown stream is refused

	// Removing the job frees its chunks; a late chunk of it is dropped.
	is.Equal(logRows(t, dsn, id), 6) // four chunks of step 0, its stderr, step 1
	_, _, _, err = s.Cancel(ctx, id, "done", time.Now())
	is.NoErr(err)
	removed, _, err := s.Remove(ctx, []int64{id}, time.Now())
	is.NoErr(err)
	is.Equal(removed, []int64{id})
	is.Equal(logRows(t, dsn, id), 0)
	is.NoErr(s.AppendLog(ctx, id, 0, rpc.StreamAll, int64(len(want)), []byte("late\n")))
	is.Equal(logRows(t, dsn, id), 0)
}

// TestLogsTwoStores: a log appended through one store is read through
// another on the same database, as two daemons do.
func TestLogsTwoStores(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	dsn := servers.DB(t)
	a, b := open(t, dsn), open(t, dsn)
	id := submitOne(t, a)
	is.NoErr(a.AppendLog(ctx, id, 0, rpc.StreamAll, 0, []byte("from a\n")))
	got, size, err := b.ReadLog(ctx, id, 0, rpc.StreamAll, 0, 100)
	is.NoErr(err)
	is.Equal(string(got), "from a\n")
	is.Equal(size, int64(7))
	is.NoErr(b.AppendLog(ctx, id, 0, rpc.StreamAll, size, []byte("from b\n")))
	got, _, err = a.ReadLog(ctx, id, 0, rpc.StreamAll, 0, 100)
	is.NoErr(err)
	is.Equal(string(got), "from a\nfrom b\n")
}
