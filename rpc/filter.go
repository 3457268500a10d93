package rpc

import (
	"fmt"
	"path"
	"slices"
	"time"
)

// Filter selects jobs for job.list and for the methods that act on many jobs
// (jobs.wait, jobs.retry, jobs.cancel). Every field given must match: a job is
// in one of State (any state when empty), in Queue, has every label of Labels,
// has a name that Name matches as a glob (path.Match syntax: *, ?, [a-z]), and
// was submitted more than OlderThan and less than NewerThan ago, by the
// daemon's clock.
type Filter struct {
	State     []State           `json:"state"`
	Queue     string            `json:"queue"`
	Labels    map[string]string `json:"labels"`
	Name      string            `json:"name"`
	OlderThan Duration          `json:"older_than"`
	NewerThan Duration          `json:"newer_than"`
}

// MaxNameGlob is the longest name glob a filter takes.
const MaxNameGlob = 256

// Validate checks f, naming the field under field ("filter", or "" at the top
// level of job.list's params).
func (f Filter) Validate(field string) error {
	at := func(name string) string {
		if field == "" {
			return name
		}
		return field + "." + name
	}
	for i, s := range f.State {
		switch s {
		case StateQueued, StateRunning, StateSucceeded, StateFailed, StateCancelled:
		default:
			return InvalidParams(fmt.Sprintf("%s[%d]", at("state"), i), fmt.Sprintf("unknown job state %q: queued, running, succeeded, failed or cancelled", s))
		}
	}
	if f.Queue != "" && !queueNameOK(f.Queue) {
		return InvalidParams(at("queue"), "must match [a-z0-9._-]{1,64}")
	}
	if err := checkLabels(at("labels"), f.Labels); err != nil {
		return err
	}
	if len(f.Name) > MaxNameGlob {
		return InvalidParams(at("name"), fmt.Sprintf("a name glob is at most %d bytes", MaxNameGlob))
	}
	if _, err := path.Match(f.Name, ""); err != nil {
		return InvalidParams(at("name"), `not a valid glob: use *, ? and [a-z], and close every "["`)
	}
	if f.OlderThan < 0 {
		return InvalidParams(at("older_than"), "must not be negative")
	}
	if f.NewerThan < 0 {
		return InvalidParams(at("newer_than"), "must not be negative")
	}
	if f.OlderThan > 0 && f.NewerThan > 0 && f.OlderThan >= f.NewerThan {
		return InvalidParams(at("newer_than"), "must be more than older_than, or no job can match")
	}
	return nil
}

// checkStates checks that f names only states of allowed, and returns its
// states, or allowed when it names none.
func (f Filter) checkStates(field string, allowed []State, why string) ([]State, error) {
	for i, s := range f.State {
		if !slices.Contains(allowed, s) {
			return nil, InvalidParams(fmt.Sprintf("%s.state[%d]", field, i), why)
		}
	}
	if len(f.State) == 0 {
		return allowed, nil
	}
	return f.State, nil
}

// Match reports whether job j passes every part of f but State (which the
// store reads from its index) at time now.
func (f Filter) Match(j *Job, now time.Time) bool {
	if f.Queue != "" && j.Queue != f.Queue {
		return false
	}
	for k, v := range f.Labels {
		if got, ok := j.Labels[k]; !ok || got != v {
			return false
		}
	}
	if f.Name != "" {
		if ok, _ := path.Match(f.Name, j.Name); !ok {
			return false
		}
	}
	if f.OlderThan > 0 && !j.SubmittedAt.Before(now.Add(-f.OlderThan.D())) {
		return false
	}
	if f.NewerThan > 0 && !j.SubmittedAt.After(now.Add(-f.NewerThan.D())) {
		return false
	}
	return true
}

// Narrows reports whether f selects by anything but state (Match may refuse
// a job).
func (f Filter) Narrows() bool {
	return f.Queue != "" || len(f.Labels) > 0 || f.Name != "" || f.OlderThan > 0 || f.NewerThan > 0
}

// Filter is the filter of a job.list call.
func (p ListParams) Filter() Filter {
	return Filter{State: p.State, Queue: p.Queue, Labels: p.Labels, Name: p.Name, OlderThan: p.OlderThan, NewerThan: p.NewerThan}
}

// ListParams pages through the jobs f selects, limit at a time, in ascending
// id order.
func (f Filter) ListParams(limit int) ListParams {
	return ListParams{State: f.State, Queue: f.Queue, Labels: f.Labels, Name: f.Name, OlderThan: f.OlderThan, NewerThan: f.NewerThan, Limit: limit, Order: "asc"}
}
