package httpapi_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/matryer/is"

	"spool/rpc"
)

// TestSchedulesOverHTTP: schedules are served with the other methods; a read
// token reads them with their params' values hidden and changes none.
func TestSchedulesOverHTTP(t *testing.T) {
	is := is.New(t)
	h := newHarness(t, harnessOpts{})
	h.call("template.put", `{"name":"t","spec":{"steps":[{"shell":{"script":"true"}}]},"params":{"p":{"required":true}}}`, nil)
	var sc rpc.Schedule
	h.call("schedule.put", `{"name":"n","cron":"0 3 * * *","tz":"UTC","template":"t","params":{"p":"s3cret"}}`, &sc)
	is.Equal(sc.Params["p"], "s3cret") // a write token sees the params
	is.True(sc.NextSlot != nil)        // and the next slot

	for _, m := range []struct{ method, body string }{
		{"schedule.get", `{"name":"n"}`},
		{"schedule.list", `{}`},
	} {
		code, b := h.post(readToken, m.method, m.body)
		is.Equal(code, 200)                                // a read token reads
		is.True(!strings.Contains(string(b), "s3cret"))    // no param value
		is.True(strings.Contains(string(b), "[redacted]")) // its name stays
	}
	for _, m := range []string{"schedule.put", "schedule.remove", "schedule.pause", "schedule.resume"} {
		code, _ := h.post(readToken, m, `{"name":"n"}`)
		is.Equal(code, http.StatusForbidden) // a read token changes nothing
	}
	code, b := h.post(writeToken, "schedule.get", `{"name":"nope"}`)
	is.Equal(code, http.StatusNotFound)             // an unknown schedule is 404
	is.Equal(apiError(t, b).Code, rpc.CodeNotFound) // 1001
	code, b = h.post(writeToken, "schedule.put", `{"name":"x","cron":"bad","template":"t"}`)
	is.Equal(code, http.StatusBadRequest)       // invalid
	is.Equal(apiError(t, b).Data.Field, "cron") // naming the field
}
