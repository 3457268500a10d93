package daemon_test

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/matryer/is"

	"spool/rpc"
)

// outputOf watches a paused queue's job with output, starts the queue, and
// returns the job's output events, in order, and its log.
func outputOf(t *testing.T, script string) ([]rpc.Event, string) {
	t.Helper()
	is := is.New(t)
	dir := t.TempDir()
	h := start(t, dir, nil)
	paused := true
	_, err := h.d.QueueSet(ctxT(t), rpc.QueueSetParams{Name: "utf8", Paused: &paused})
	is.NoErr(err)
	j := submit(t, h.d, rpc.Spec{Queue: "utf8", Steps: []rpc.Step{shell(script)}})
	w, err := h.d.Watch(ctxT(t), rpc.WatchParams{Jobs: []int64{j.ID}, Output: true})
	is.NoErr(err)
	paused = false
	_, err = h.d.QueueSet(ctxT(t), rpc.QueueSetParams{Name: "utf8", Paused: &paused})
	is.NoErr(err)
	var out []rpc.Event
	for {
		ev, err := w.Next(ctxT(t))
		if err == io.EOF {
			break
		}
		is.NoErr(err)
		if ev.Type == rpc.EventOutput {
			out = append(out, *ev)
		}
	}
	log, err := os.ReadFile(filepath.Join(dir, "logs", itoa(j.ID), "0.log"))
	is.NoErr(err)
	return out, string(log)
}

// TestOutputKeepsCharactersWhole: a character written in two parts, with a pause
// between, reaches output watchers whole: no event cuts it, the offsets stay
// those of the log, and the events put together are the log.
func TestOutputKeepsCharactersWhole(t *testing.T) {
	is := is.New(t)
	// € is e2 82 ac; 😀 is f0 9f 98 80. Each is cut after its first bytes.
	evs, log := outputOf(t, `printf 'price: \342'; sleep 0.3; printf '\202\254 and \360\237'; sleep 0.3; printf '\230\200 end\n'`)
	is.Equal(log, "price: € and 😀 end\n") // the log has the characters whole
	var all strings.Builder
	for _, ev := range evs {
		is.Equal(*ev.Offset, int64(all.Len()))         // each event starts where the last ended, in log bytes
		is.True(utf8.ValidString(*ev.Data))            // and holds whole characters
		is.True(!strings.Contains(*ev.Data, "\uFFFD")) // none replaced
		all.WriteString(*ev.Data)
	}
	is.Equal(all.String(), log) // the events put together are the log
	is.True(len(evs) >= 2)      // the pauses made several chunks
}

// TestOutputFlushesACutCharacterAtTheEnd: bytes of a character that never
// completes go out at the end of the step, replaced, at their own offset.
func TestOutputFlushesACutCharacterAtTheEnd(t *testing.T) {
	is := is.New(t)
	evs, log := outputOf(t, `printf 'abc\342\202'`)
	is.Equal(log, "abc\xe2\x82") // the log has the bytes as written
	var all strings.Builder
	for _, ev := range evs {
		is.Equal(*ev.Offset, int64(len(strings.ReplaceAll(all.String(), "\uFFFD", "\xe2\x82")))) // offsets count log bytes
		all.WriteString(*ev.Data)
	}
	is.Equal(all.String(), "abc\uFFFD") // the cut character is sent, replaced, not lost
	last := evs[len(evs)-1]
	is.Equal(*last.Offset, int64(3)) // at the offset of its first byte
}
