package rpc

import (
	"encoding/json"
	"testing"

	"github.com/matryer/is"
)

func TestEditParamsValidate(t *testing.T) {
	long := string(make([]rune, MaxLabelLen+1))
	x := "x"
	one := 1
	bad := "Bad Queue"
	cases := []struct {
		name  string
		p     EditParams
		field string
	}{
		{"no id", EditParams{Priority: &one}, "id"},
		{"nothing to change", EditParams{ID: 1}, "id"},
		{"queue", EditParams{ID: 1, Queue: &bad}, "queue"},
		{"empty label name", EditParams{ID: 1, Labels: map[string]*string{"": &x}}, "labels"},
		{"long label", EditParams{ID: 1, Labels: map[string]*string{"k": &long}}, "labels.k"},
		{"after id", EditParams{ID: 1, After: &[]int64{2, 0}}, "after[1]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			is := is.New(t)
			err := c.p.Validate()
			is.Equal(CodeOf(err), CodeInvalidParams)   // refused
			is.Equal(AsError(err).Data.Field, c.field) // naming the field
		})
	}
	is := is.New(t)
	is.NoErr(EditParams{ID: 1, Labels: map[string]*string{"k": nil}}.Validate()) // removing a label is a change
	is.NoErr(HoldParams{ID: 1}.Validate())                                       // an id
	is.Equal(CodeOf(HoldParams{}.Validate()), CodeInvalidParams)                 // or none
}

// TestEncodeEditFields checks the fields editing and holding add to events and
// records against encoding/json.
func TestEncodeEditFields(t *testing.T) {
	is := is.New(t)
	for _, e := range []Event{
		{Seq: 3, Job: 1, Type: EventEdited, State: StateQueued, Changes: json.RawMessage(` {"priority": {"from": 0, "to": 5}} `)},
		{Job: 1, Type: EventHeld, State: StateQueued},
	} {
		want, err := json.Marshal(plainEvent(e))
		is.NoErr(err)
		got, err := e.AppendJSON(nil)
		is.NoErr(err)
		is.Equal(string(got), string(want)) // an event with changes encodes as encoding/json does
	}
	for _, r := range []Record{{Run: RunState{Held: true}}, {Run: RunState{Held: true, Epoch: 2, Node: "n"}}} {
		want, err := json.Marshal(plainRecord{plainJob(r.Job), r.Run})
		is.NoErr(err)
		got, err := r.AppendJSON(nil)
		is.NoErr(err)
		is.Equal(string(got), string(want)) // a held record too
	}
}
