package machine

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"spool/rpc"
)

// Hold marks a queued job held: no claim takes it until Release. Its state,
// steps and place are kept. The caller checks that the job is queued and not
// held.
func Hold(rec *rpc.Record, now time.Time) []rpc.Event {
	rec.Run.Held = true
	w := rpc.WaitingHeld
	rec.Waiting = &w
	return []rpc.Event{{Time: now, Job: rec.ID, Type: rpc.EventHeld, State: rpc.StateQueued}}
}

// Release ends a queued job's hold: it is claimable again by its priority and
// id, as before it was held. The caller checks that the job is queued and held.
func Release(rec *rpc.Record, now time.Time) []rpc.Event {
	rec.Run.Held = false
	rec.Waiting = nil
	return []rpc.Event{{Time: now, Job: rec.ID, Type: rpc.EventReleased, State: rpc.StateQueued}}
}

// Edit applies p to a queued job: priority and queue replace the job's, labels
// are merged (null removes one), not_before is set or cleared, after replaces
// the dependencies (duplicates dropped, order kept). It returns the edited
// event, whose changes name each field that changed with its value before and
// after, or no event when nothing changes. Merged labels past rpc.MaxLabels are
// -32602 and change nothing. The caller checks that the job is queued and that
// the ids of after exist and make no cycle.
func Edit(rec *rpc.Record, p rpc.EditParams, now time.Time) ([]rpc.Event, error) {
	type change struct {
		From any `json:"from"`
		To   any `json:"to"`
	}
	var names []string
	changes := map[string]change{}
	note := func(name string, from, to any) {
		names = append(names, name)
		changes[name] = change{from, to}
	}
	next := *rec
	if p.Priority != nil && *p.Priority != rec.Priority {
		note("priority", rec.Priority, *p.Priority)
		next.Priority = *p.Priority
	}
	if p.Queue != nil && *p.Queue != rec.Queue {
		note("queue", rec.Queue, *p.Queue)
		next.Queue = *p.Queue
	}
	if p.Labels != nil {
		labels := maps.Clone(rec.Labels)
		if labels == nil {
			labels = map[string]string{}
		}
		for k, v := range p.Labels {
			if v == nil {
				delete(labels, k)
			} else {
				labels[k] = *v
			}
		}
		if len(labels) > rpc.MaxLabels {
			return nil, rpc.InvalidParams("labels", fmt.Sprintf("the job would have %d labels: at most %d", len(labels), rpc.MaxLabels))
		}
		if !maps.Equal(labels, rec.Labels) {
			from := rec.Labels
			if from == nil {
				from = map[string]string{}
			}
			note("labels", from, labels)
			next.Labels = labels
		}
	}
	if p.NotBefore.Set {
		var nb *time.Time
		if p.NotBefore.Time != nil {
			t := p.NotBefore.Time.UTC()
			nb = &t
		}
		same := (nb == nil) == (rec.NotBefore == nil) && (nb == nil || nb.Equal(*rec.NotBefore))
		if !same {
			note("not_before", rec.NotBefore, nb)
			next.NotBefore = nb
		}
	}
	if p.After != nil {
		after := []int64{}
		for _, id := range *p.After {
			if !slices.Contains(after, id) {
				after = append(after, id)
			}
		}
		from := rec.After
		if from == nil {
			from = []int64{}
		}
		if !slices.Equal(after, from) {
			note("after", from, after)
			next.After = after
		}
	}
	if len(names) == 0 {
		return nil, nil
	}
	raw, err := json.Marshal(changes)
	if err != nil {
		return nil, fmt.Errorf("encode the changes of job %d: %w", rec.ID, err)
	}
	*rec = next
	return []rpc.Event{{Time: now, Job: rec.ID, Type: rpc.EventEdited, State: rpc.StateQueued, Changes: raw}}, nil
}
