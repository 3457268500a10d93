package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strconv"
	"sync"
	"time"

	"github.com/sourcegraph/jsonrpc2"

	"spool/rpc"
	"spool/rpc/codec"
)

// DefaultMaxMessage is the largest message the client reads from the daemon, in
// bytes. The largest answers are those of a batch submit, which echo at most a
// request's worth of specs (1 MiB by default) with some hundred bytes per job: a
// few MiB for 10,000 jobs.
const DefaultMaxMessage = 64 << 20

// abandonedMark is the data of the error the stream makes up for a call whose
// caller gave up (see lineStream.abandon).
const abandonedMark = `"spool client: call abandoned"`

// lineStream is the jsonrpc2.ObjectStream of the protocol's newline framing (one
// JSON object per line) on a net.Conn, with what jsonrpc2's own streams lack:
//
//   - reads are bounded: a line longer than max ends the connection with an error
//     instead of growing a buffer without end;
//   - a line that is not a JSON-RPC message is skipped, not taken for the end of
//     the connection (the daemon never sends one; a newer one might add kinds);
//   - a write can be interrupted by a context (interruptWrites), as jsonrpc2's
//     Conn ignores the context it is given;
//   - a call its caller gave up can be answered locally (abandon), so that the
//     Conn's table of pending calls keeps no entry for it;
//   - results skip jsonrpc2's generic decoding: the Conn decodes every message
//     into interface{} values to tell requests from responses, then once more,
//     which made a call of the CLI half as slow again. The stream takes each
//     response apart in one pass, keeps the result for its call (expect, take)
//     and hands the Conn the response without it; answers to calls no longer
//     under way are dropped here.
type lineStream struct {
	conn net.Conn
	br   *bufio.Reader
	max  int
	part []byte // a line read in part so far (across interrupted reads)

	// dl guards writing, with which a done context (wctx, the writer's) interrupts
	// a blocked write.
	dl          sync.Mutex
	wctx        context.Context
	writing     bool
	interrupted bool // the write deadline was set to interrupt a write
	// next is the request the Conn writes next (onSend); the Conn's send lock
	// guards it.
	next *jsonrpc2.Request

	// imu guards the answers made up for abandoned calls, and the read deadline
	// set to wake the reader up for them.
	imu   sync.Mutex
	made  [][]byte
	woken bool

	// rmu guards results: an entry for each call under way (expect), holding
	// its result once it came, until the call takes it (take).
	rmu     sync.Mutex
	results map[int64][]byte

	emu   sync.Mutex
	err   error         // why reading ended
	ended chan struct{} // closed once reading ended
}

func newLineStream(conn net.Conn, max int) *lineStream {
	return &lineStream{conn: conn, br: bufio.NewReaderSize(conn, 64<<10), max: max,
		results: make(map[int64][]byte), ended: make(chan struct{})}
}

// errTooLarge is the error of a message longer than the stream's bound.
type errTooLarge struct{ max int }

func (e errTooLarge) Error() string {
	return fmt.Sprintf("a message from the daemon is larger than %d bytes: not reading it", e.max)
}

// ReadObject implements jsonrpc2.ObjectStream: it decodes the next line into v
// (jsonrpc2's message type), or a made-up answer for an abandoned call.
func (s *lineStream) ReadObject(v any) error {
	for {
		if msg := s.takeMade(); msg != nil {
			return json.Unmarshal(msg, v)
		}
		line, err := s.readLine()
		if err != nil {
			if s.wokenUp(err) {
				continue
			}
			s.end(err)
			return err
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] != '{' {
			continue
		}
		line, ok := s.keepResult(line)
		if !ok {
			continue
		}
		if err := json.Unmarshal(line, v); err != nil {
			// Not a message jsonrpc2 knows of: skip it, and leave nothing of it
			// in v.
			reflect.ValueOf(v).Elem().SetZero()
			continue
		}
		return nil
	}
}

// keepResult takes a response with a result apart: the result is kept for its call
// and the response handed on without it. ok is false for an answer to no call
// under way, which is dropped. Other messages go on as they are.
func (s *lineStream) keepResult(line []byte) (out []byte, ok bool) {
	var id, result json.RawMessage
	isResponse := true
	err := codec.Members(line, func(key []byte, val json.RawMessage) {
		switch string(key) {
		case "id":
			id = val
		case "result":
			result = val
		case "method", "error":
			isResponse = false // a request, or an error: small, as it is
		}
	})
	if err != nil || !isResponse || result == nil {
		return line, true // jsonrpc2 decides what it is
	}
	n, err := strconv.ParseInt(string(id), 10, 64)
	if err != nil {
		return nil, false // not one of our ids
	}
	s.rmu.Lock()
	defer s.rmu.Unlock()
	if _, live := s.results[n]; !live {
		return nil, false
	}
	s.results[n] = bytes.Clone(result)
	return []byte(`{"jsonrpc":"2.0","id":` + strconv.FormatInt(n, 10) + `,"result":null}`), true
}

// expect makes room for the result of the call with id, before it is sent.
func (s *lineStream) expect(id int64) {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	s.results[id] = nil
}

// take returns the result kept for the call with id, if any, and forgets the call:
// a later answer to it is dropped.
func (s *lineStream) take(id int64) json.RawMessage {
	s.rmu.Lock()
	defer s.rmu.Unlock()
	r := s.results[id]
	delete(s.results, id)
	return r
}

// readLine reads up to and including the next newline. A read that fails keeps
// what it read so far, for the next call.
func (s *lineStream) readLine() ([]byte, error) {
	for {
		frag, err := s.br.ReadSlice('\n')
		if err == nil && len(s.part) == 0 {
			if len(frag) > s.max {
				return nil, errTooLarge{s.max}
			}
			return frag, nil // valid until the next read: decoded before it
		}
		if len(s.part)+len(frag) > s.max {
			return nil, errTooLarge{s.max}
		}
		s.part = append(s.part, frag...)
		switch {
		case err == nil:
			line := s.part
			if cap(s.part) > 1<<20 {
				s.part = nil // do not keep a large buffer for small lines
			} else {
				s.part = s.part[:0]
			}
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		}
		return nil, err
	}
}

// wokenUp reports whether err is the read deadline abandon set to wake the reader,
// and clears that deadline.
func (s *lineStream) wokenUp(err error) bool {
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		return false
	}
	s.imu.Lock()
	defer s.imu.Unlock()
	if !s.woken {
		return false // a deadline the owner of the connection set
	}
	s.woken = false
	// A deadline that cannot be cleared would fail every read: end here.
	return s.conn.SetReadDeadline(time.Time{}) == nil
}

func (s *lineStream) takeMade() []byte {
	s.imu.Lock()
	defer s.imu.Unlock()
	if len(s.made) == 0 {
		return nil
	}
	msg := s.made[0]
	s.made[0] = nil
	s.made = s.made[1:]
	if len(s.made) == 0 {
		s.made = nil
	}
	return msg
}

// abandon answers the call with id locally, with an error carrying abandonedMark,
// and wakes the reader so that it hands the answer to the Conn at once: the Conn
// then forgets the call. When the daemon's own answer comes later, the Conn finds
// no call for it and drops it.
func (s *lineStream) abandon(id int64) {
	msg := []byte(`{"jsonrpc":"2.0","id":` + strconv.FormatInt(id, 10) +
		`,"error":{"code":` + strconv.Itoa(rpc.CodeCancelled) + `,"message":"call abandoned","data":` + abandonedMark + `}}`)
	s.imu.Lock()
	defer s.imu.Unlock()
	s.made = append(s.made, msg)
	s.woken = true
	if err := s.conn.SetReadDeadline(time.Unix(1, 0)); err != nil {
		// The reader cannot be woken: it gets the answer with the next message,
		// or the Conn drops the call when the connection ends.
		s.woken = false
	}
}

// isAbandoned reports whether err is the answer abandon made up.
func isAbandoned(err error) bool {
	var e *jsonrpc2.Error
	return errors.As(err, &e) && e.Data != nil && string(*e.Data) == abandonedMark
}

// end records why reading ended.
func (s *lineStream) end(err error) {
	s.emu.Lock()
	defer s.emu.Unlock()
	if s.err == nil {
		s.err = err
		close(s.ended)
	}
}

// readErr is why reading ended, or nil while it goes on.
func (s *lineStream) readErr() error {
	s.emu.Lock()
	defer s.emu.Unlock()
	return s.err
}

// onSend is the Conn's hook (jsonrpc2.OnSend) called with each message just
// before it hands it to WriteObject, both under the Conn's send lock: it tells
// WriteObject which request it writes.
func (s *lineStream) onSend(req *jsonrpc2.Request, _ *jsonrpc2.Response) {
	s.next = req
}

// WriteObject implements jsonrpc2.ObjectStream: obj (jsonrpc2's message) on a
// line of its own. jsonrpc2's Conn writes one object at a time. A write that fails,
// or is interrupted, may have written part of the message: it closes the
// connection.
func (s *lineStream) WriteObject(obj any) error {
	req := s.next
	s.next = nil
	b, ok := appendRequest(nil, req)
	if !ok {
		// jsonrpc2's own encoding goes through a map and encodes the params
		// twice more: only what appendRequest does not know of takes it.
		var err error
		if m, isM := obj.(json.Marshaler); isM {
			b, err = m.MarshalJSON() // what encoding/json would compact once more
		} else {
			b, err = json.Marshal(obj)
		}
		if err != nil {
			return err
		}
	}
	b = append(b, '\n')
	s.dl.Lock()
	if s.wctx != nil && s.wctx.Err() != nil {
		s.dl.Unlock()
		return s.wctx.Err() // nothing written: the connection is fine
	}
	s.writing = true
	s.dl.Unlock()
	_, err := s.conn.Write(b)
	s.dl.Lock()
	s.writing = false
	if s.interrupted {
		s.interrupted = false
		if derr := s.conn.SetWriteDeadline(time.Time{}); derr != nil && err == nil {
			err = fmt.Errorf("clear the write deadline: %w", derr)
		}
	}
	s.dl.Unlock()
	if err != nil {
		s.conn.Close()
		return err
	}
	return nil
}

// appendRequest appends req as JSON-RPC 2.0 to b, with its params as they are
// (jsonrpc2 made them with encoding/json). ok is false for nil, and for a request
// with members the client never sends (meta, extra fields).
func appendRequest(b []byte, req *jsonrpc2.Request) (_ []byte, ok bool) {
	if req == nil || req.Meta != nil || len(req.ExtraFields) > 0 {
		return b, false
	}
	method, err := json.Marshal(req.Method)
	if err != nil {
		return b, false
	}
	b = append(b, `{"jsonrpc":"2.0"`...)
	if !req.Notif {
		id, err := req.ID.MarshalJSON()
		if err != nil {
			return b, false
		}
		b = append(b, `,"id":`...)
		b = append(b, id...)
	}
	b = append(b, `,"method":`...)
	b = append(b, method...)
	if req.Params != nil {
		b = append(b, `,"params":`...)
		b = append(b, *req.Params...)
	}
	return append(b, '}'), true
}

// interruptWrites makes ctx, once done, interrupt a write under way, or refuse to
// start one. The caller serializes its writes, so that a context only ever
// interrupts its own, and calls stop once it wrote.
func (s *lineStream) interruptWrites(ctx context.Context) (stop func()) {
	s.dl.Lock()
	s.wctx = ctx
	s.dl.Unlock()
	stopAfter := context.AfterFunc(ctx, func() {
		s.dl.Lock()
		defer s.dl.Unlock()
		if !s.writing {
			return
		}
		s.interrupted = true
		if err := s.conn.SetWriteDeadline(time.Unix(1, 0)); err != nil {
			s.conn.Close() // the only other way to end the write
		}
	})
	return func() {
		stopAfter()
		s.dl.Lock()
		s.wctx = nil
		s.dl.Unlock()
	}
}

// Close implements jsonrpc2.ObjectStream.
func (s *lineStream) Close() error {
	return s.conn.Close()
}
