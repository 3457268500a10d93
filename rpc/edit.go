package rpc

import (
	"encoding/json"
	"fmt"
	"time"
	"unicode/utf8"
)

// Editing and holding queued jobs: job.edit changes what decides when a queued
// job runs (priority, queue, labels, not_before, after), job.hold keeps it from
// being claimed until job.release. Each is one stored transition with its own
// event; a job that is running or final answers 1002.

// Method names of editing and holding.
const (
	MethodEdit    = "job.edit"
	MethodHold    = "job.hold"
	MethodRelease = "job.release"
)

// Event types of editing and holding. An edited event carries Changes.
const (
	EventEdited   = "edited"
	EventHeld     = "held"
	EventReleased = "released"
)

// WaitingHeld is the waiting reason of a held job.
const WaitingHeld = "held"

// EditParams changes a queued job. A field left out (or null, but for
// not_before) is kept:
//   - priority and queue replace the job's;
//   - labels is merged into the job's labels: a name with a string sets that
//     label, a name with null removes it (a JSON merge patch, RFC 7386);
//   - not_before sets the time, or with null clears it;
//   - after replaces the list of dependencies ([] clears it).
type EditParams struct {
	ID        int64              `json:"id"`
	Priority  *int               `json:"priority,omitempty"`
	Queue     *string            `json:"queue,omitempty"`
	Labels    map[string]*string `json:"labels,omitempty"`
	NotBefore OptionalTime       `json:"not_before,omitzero"`
	After     *[]int64           `json:"after,omitempty"`
}

// OptionalTime is a time that is left out (Set false: keep it), null (Set,
// Time nil: clear it) or given (Set, Time set).
type OptionalTime struct {
	Set  bool
	Time *time.Time
}

// IsZero reports whether the time was left out, so that omitzero leaves it out.
func (o OptionalTime) IsZero() bool { return !o.Set }

// MarshalJSON writes the time, or null.
func (o OptionalTime) MarshalJSON() ([]byte, error) {
	if o.Time == nil {
		return []byte("null"), nil
	}
	return json.Marshal(o.Time.UTC())
}

// UnmarshalJSON reads null or an RFC 3339 time; either sets Set.
func (o *OptionalTime) UnmarshalJSON(b []byte) error {
	o.Set, o.Time = true, nil
	if string(b) == "null" {
		return nil
	}
	var t time.Time
	if err := json.Unmarshal(b, &t); err != nil {
		return fmt.Errorf("must be an RFC 3339 time or null")
	}
	t = t.UTC()
	o.Time = &t
	return nil
}

// Changes reports whether the params ask for any change.
func (p EditParams) Changes() bool {
	return p.Priority != nil || p.Queue != nil || p.Labels != nil || p.NotBefore.Set || p.After != nil
}

// Validate checks the id, that something is to change, and each field with the
// spec's limits. Whether the ids of after exist, and make no cycle, is the
// store's to check.
func (p EditParams) Validate() error {
	if err := checkID("id", p.ID); err != nil {
		return err
	}
	if !p.Changes() {
		return InvalidParams("id", "give at least one of priority, queue, labels, not_before, after to change")
	}
	if p.Queue != nil && !queueNameOK(*p.Queue) {
		return InvalidParams("queue", "must match [a-z0-9._-]{1,64}")
	}
	if len(p.Labels) > MaxLabels {
		return InvalidParams("labels", fmt.Sprintf("at most %d labels", MaxLabels))
	}
	for _, k := range sortedKeys(p.Labels) {
		if k == "" {
			return InvalidParams("labels", "a label name must not be empty")
		}
		v := p.Labels[k]
		if utf8.RuneCountInString(k) > MaxLabelLen || v != nil && utf8.RuneCountInString(*v) > MaxLabelLen {
			return InvalidParams(KeyPath("labels", k), fmt.Sprintf("at most %d characters", MaxLabelLen))
		}
	}
	if p.After != nil {
		if err := checkIDs("after", *p.After, MaxBatch); err != nil {
			return err
		}
	}
	return nil
}

// HoldParams names the job to hold (job.hold) or release (job.release).
type HoldParams struct {
	ID int64 `json:"id"`
}

// Validate checks the id.
func (p HoldParams) Validate() error { return checkID("id", p.ID) }
