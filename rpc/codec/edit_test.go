package codec

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/matryer/is"

	"spool/rpc"
)

// TestDecodeEditParams checks the three ways a field of job.edit can come:
// left out (kept), null (not_before: cleared; a label: removed), or given.
func TestDecodeEditParams(t *testing.T) {
	is := is.New(t)
	var p rpc.EditParams
	is.NoErr(DecodeParams(json.RawMessage(`{"id": 3, "priority": 2}`), &p))
	is.Equal(*p.Priority, 2)           // given
	is.True(!p.NotBefore.Set)          // left out: kept
	is.Equal(p.After, (*[]int64)(nil)) // left out: kept

	p = rpc.EditParams{}
	is.NoErr(DecodeParams(json.RawMessage(`{"id": 3, "not_before": null, "after": [], "labels": {"a": null, "b": "x"}}`), &p))
	is.True(p.NotBefore.Set)        // null is given
	is.Equal(p.NotBefore.Time, nil) // as no time: cleared
	is.Equal(*p.After, []int64{})   // an empty list clears the dependencies
	is.Equal(p.Labels["a"], nil)    // a null label is removed
	is.Equal(*p.Labels["b"], "x")   // a string one set
	is.NoErr(p.Validate())          // and all of it is valid

	p = rpc.EditParams{}
	is.NoErr(DecodeParams(json.RawMessage(`{"id": 3, "not_before": "2026-12-01T10:00:00+01:00"}`), &p))
	is.True(p.NotBefore.Time.Equal(time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC))) // a time, in UTC

	code, field, _ := paramsError(t, `{"id": 3, "not_before": "soon"}`, &rpc.EditParams{})
	is.Equal(code, rpc.CodeInvalidParams) // not a time
	is.Equal(field, "not_before")         // named
	code, field, _ = paramsError(t, `{"id": 3, "prio": 1}`, &rpc.EditParams{})
	is.Equal(code, rpc.CodeInvalidParams) // unknown field
	is.Equal(field, "prio")               // named

	// The client's encoding round-trips: left out stays out, null stays null.
	b, err := json.Marshal(rpc.EditParams{ID: 3, NotBefore: rpc.OptionalTime{Set: true}})
	is.NoErr(err)
	is.Equal(string(b), `{"id":3,"not_before":null}`) // null is sent; the rest left out
	b, err = json.Marshal(rpc.EditParams{ID: 3, After: &[]int64{}})
	is.NoErr(err)
	is.Equal(string(b), `{"id":3,"after":[]}`) // an empty after is sent
}
