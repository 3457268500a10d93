package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/sourcegraph/jsonrpc2"

	"spool/rpc"
)

// eventSink is the handler of a plain jsonrpc2 client: it keeps the job.event
// notifications, in the order they arrive (jsonrpc2 calls it on its reader).
type eventSink struct{ events chan rpc.EventParams }

func (s eventSink) Handle(_ context.Context, _ *jsonrpc2.Conn, req *jsonrpc2.Request) {
	if !req.Notif || req.Method != rpc.MethodEvent || req.Params == nil {
		return
	}
	var p rpc.EventParams
	if json.Unmarshal(*req.Params, &p) != nil || p.Event == nil {
		p = rpc.EventParams{Token: "undecodable"}
	}
	select {
	case s.events <- p:
	default: // the test reads far fewer than the buffer holds
	}
}

// TestInteropJSONRPC2 drives the real spoold with github.com/sourcegraph/jsonrpc2
// as an editor's client would, with the library's own streams: the plain stream
// (newline-delimited JSON) and VSCodeObjectCodec (LSP's Content-Length framing).
// Calls, errors, watch notifications and $/cancelRequest work in both.
func TestInteropJSONRPC2(t *testing.T) {
	p := newDaemon(t)
	for _, tc := range []struct {
		name   string
		stream func(net.Conn) jsonrpc2.ObjectStream
		opts   []jsonrpc2.CallOption
	}{
		{"newline", func(c net.Conn) jsonrpc2.ObjectStream { return jsonrpc2.NewPlainObjectStream(c) }, nil},
		{"lsp", func(c net.Conn) jsonrpc2.ObjectStream {
			return jsonrpc2.NewBufferedStream(c, jsonrpc2.VSCodeObjectCodec{})
		}, []jsonrpc2.CallOption{jsonrpc2.StringID()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			is := is.New(t)
			ctx := tctx(t)
			nc, err := net.Dial("unix", p.socket)
			is.NoErr(err) // connect
			sink := eventSink{events: make(chan rpc.EventParams, 1000)}
			conn := jsonrpc2.NewConn(ctx, tc.stream(nc), sink, jsonrpc2.SetLogger(log.New(io.Discard, "", 0)))
			t.Cleanup(func() { conn.Close() })

			var info rpc.Info
			is.NoErr(conn.Call(ctx, rpc.MethodInfo, rpc.Empty{}, &info, tc.opts...)) // daemon.info answers
			is.Equal(info.Protocol, 1)                                               // the protocol's version

			var wr rpc.WatchResult
			is.NoErr(conn.Call(ctx, rpc.MethodWatch, rpc.WatchParams{}, &wr, tc.opts...)) // job.watch starts
			is.True(wr.Token != "")                                                       // and names the watch

			spec := rpc.Spec{Name: "interop-" + tc.name, Steps: []rpc.Step{sh("echo " + tc.name)}}
			var job rpc.Job
			is.NoErr(conn.Call(ctx, rpc.MethodSubmit, rpc.SubmitParams{Job: &spec}, &job, tc.opts...)) // job.submit answers
			is.True(job.ID > 0)                                                                        // with the new job

			// The job's events arrive as notifications, in seq order, up to its end.
			var types []string
			var last int64
			for done := false; !done; {
				select {
				case ev := <-sink.events:
					is.Equal(ev.Token, wr.Token) // every event names the watch
					if ev.Event.Job != job.ID || ev.Event.Seq == 0 {
						continue // another job's (the other framing's), or not stored
					}
					is.True(ev.Event.Seq > last) // in seq order
					last = ev.Event.Seq
					types = append(types, ev.Event.Type)
					done = ev.Event.Type == rpc.EventSucceeded || ev.Event.Type == rpc.EventFailed
				case <-ctx.Done():
					t.Fatalf("the job's events stopped after %v", types)
				}
			}
			is.Equal(types, []string{rpc.EventSubmitted, rpc.EventStarted, rpc.EventStepStarted, rpc.EventStepFinished, rpc.EventSucceeded}) // the whole life of the job

			// A protocol error is a *jsonrpc2.Error with the protocol's code.
			err = conn.Call(ctx, rpc.MethodGet, rpc.GetParams{ID: 1 << 40}, &job, tc.opts...)
			var je *jsonrpc2.Error
			is.True(errors.As(err, &je))                       // the error is a JSON-RPC error object
			is.Equal(je.Code, int64(rpc.CodeNotFound))         // with the protocol's code
			is.True(je.Data != nil)                            // and its data
			is.Equal(string(*je.Data), `{"id":1099511627776}`) // naming the job

			// $/cancelRequest ends a pending job.wait with -32800.
			long := rpc.Spec{Steps: []rpc.Step{sh("sleep 60")}}
			var lj rpc.Job
			is.NoErr(conn.Call(ctx, rpc.MethodSubmit, rpc.SubmitParams{Job: &long}, &lj, tc.opts...)) // submit a long job
			id := jsonrpc2.ID{Num: 1000}
			if tc.name == "lsp" {
				id = jsonrpc2.ID{Str: "wait-1", IsString: true}
			}
			w, err := conn.DispatchCall(ctx, rpc.MethodWait, rpc.WaitParams{ID: lj.ID}, jsonrpc2.PickID(id))
			is.NoErr(err) // job.wait is sent
			var idJSON json.RawMessage
			idJSON, err = id.MarshalJSON()
			is.NoErr(err)
			is.NoErr(conn.Notify(ctx, rpc.MethodCancelRequest, map[string]json.RawMessage{"id": idJSON})) // cancel it
			err = w.Wait(ctx, nil)
			is.True(errors.As(err, &je))                // job.wait ends with an error
			is.Equal(je.Code, int64(rpc.CodeCancelled)) // -32800
			var cj rpc.Job
			is.NoErr(conn.Call(ctx, rpc.MethodCancel, rpc.CancelParams{ID: lj.ID}, &cj, tc.opts...)) // cancel the long job
			is.Equal(cj.State, rpc.StateCancelled)                                                   // it ends

			var empty struct{}
			is.NoErr(conn.Call(ctx, rpc.MethodUnwatch, rpc.UnwatchParams{Token: wr.Token}, &empty, tc.opts...)) // job.unwatch answers
			is.NoErr(conn.Close())                                                                              // the client closes
			select {
			case <-conn.DisconnectNotify():
			case <-time.After(30 * time.Second):
				t.Fatal("the connection did not end")
			}
		})
	}
}
