package daemon_test

import (
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
)

// TestHoldEditRelease: a held job is not started while others run, an edit
// publishes its event to watchers, and a release starts the job.
func TestHoldEditRelease(t *testing.T) {
	is := is.New(t)
	h := start(t, t.TempDir(), nil)
	is.NoErr(func() error {
		_, err := h.d.QueueSet(ctxT(t), rpc.QueueSetParams{Name: "later", Paused: ptr(true)})
		return err
	}())
	sub, err := h.d.Submit(ctxT(t), rpc.SubmitParams{Job: &rpc.Spec{Queue: "later", Steps: []rpc.Step{{Sleep: &rpc.SleepStep{Duration: dur(time.Millisecond)}}}}})
	is.NoErr(err)
	id := sub.Job.ID
	w, err := h.d.Watch(ctxT(t), rpc.WatchParams{Jobs: []int64{id}, Since: rpc.Since(0)})
	is.NoErr(err)
	defer w.Close()

	j, err := h.d.Hold(ctxT(t), rpc.HoldParams{ID: id})
	is.NoErr(err)
	is.Equal(*j.Waiting, rpc.WaitingHeld) // the answer says held
	def := "default"
	j, err = h.d.Edit(ctxT(t), rpc.EditParams{ID: id, Queue: &def})
	is.NoErr(err)
	is.Equal(j.Queue, "default")          // moved out of the paused queue
	is.Equal(*j.Waiting, rpc.WaitingHeld) // and still held
	time.Sleep(100 * time.Millisecond)
	is.Equal(get(t, h.d, id).State, rpc.StateQueued) // not started while held

	_, err = h.d.Edit(ctxT(t), rpc.EditParams{ID: id})
	is.Equal(rpc.CodeOf(err), rpc.CodeInvalidParams) // an edit with nothing to change is refused
	_, err = h.d.Hold(ctxT(t), rpc.HoldParams{ID: 999})
	is.Equal(rpc.CodeOf(err), rpc.CodeNotFound) // an unknown job

	_, err = h.d.Release(ctxT(t), rpc.HoldParams{ID: id})
	is.NoErr(err)
	j = wait(t, h.d, id)
	is.Equal(j.State, rpc.StateSucceeded) // released, it ran
	_, err = h.d.Hold(ctxT(t), rpc.HoldParams{ID: id})
	is.Equal(rpc.CodeOf(err), rpc.CodeBadState) // a final job cannot be held
	is.Equal(errData(err).State, rpc.StateSucceeded)

	var types []string
	for _, ev := range events(t, w) {
		types = append(types, ev.Type)
	}
	is.Equal(types[:4], []string{rpc.EventSubmitted, rpc.EventHeld, rpc.EventEdited, rpc.EventReleased}) // watchers get each change
}
