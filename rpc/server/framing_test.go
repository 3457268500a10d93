package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/matryer/is"
)

// readAll reads messages until an error, checking what every message must be.
func readAll(t *testing.T, fr *frameReader, max int64) ([][]byte, error) {
	t.Helper()
	var msgs [][]byte
	for {
		msg, err := fr.next()
		if err != nil {
			var pe *parseError
			if err != io.EOF && !errors.Is(err, errTooLarge) && !errors.As(err, &pe) {
				t.Fatalf("unexpected error %v", err)
			}
			return msgs, err
		}
		if int64(len(msg)) > max {
			t.Fatalf("message of %d bytes over the limit %d", len(msg), max)
		}
		if !json.Valid(msg) {
			t.Fatalf("message %q is not valid JSON", msg)
		}
		msgs = append(msgs, msg)
	}
}

func TestFrameReaderNewline(t *testing.T) {
	is := is.New(t)
	in := " \n{\"a\":\"}\\\"{\"}[1,{\"b\":[]}]\r\n\t{}  "
	fr := newFrameReader(strings.NewReader(in), 1024)
	msgs, err := readAll(t, fr, 1024)
	is.Equal(err, io.EOF)                           // white space at the end is a clean end
	is.Equal(len(msgs), 3)                          // three values
	is.Equal(string(msgs[0]), "{\"a\":\"}\\\"{\"}") // braces in strings do not count
	is.Equal(string(msgs[1]), `[1,{"b":[]}]`)       // nested values
	is.Equal(string(msgs[2]), `{}`)                 // separated by any white space
	is.Equal(fr.mode, framingNewline)               // the framing from the first byte
}

func TestFrameReaderLSP(t *testing.T) {
	is := is.New(t)
	in := "CONTENT-LENGTH: 7\r\nX-Other: 1\r\n\r\n{\"a\":1}" + "Content-Length:2\n\n[]"
	fr := newFrameReader(strings.NewReader(in), 1024)
	msgs, err := readAll(t, fr, 1024)
	is.Equal(err, io.EOF)                // a clean end
	is.Equal(len(msgs), 2)               // two messages
	is.Equal(string(msgs[0]), `{"a":1}`) // header names in any case, other headers ignored
	is.Equal(string(msgs[1]), `[]`)      // bare newlines accepted too
	is.Equal(fr.mode, framingLSP)        // the framing from the first byte
}

func TestFrameReaderErrors(t *testing.T) {
	cases := []struct {
		name, in string
		tooLarge bool
	}{
		{"unknown framing", "x", false},
		{"scalar", "{}\n5\n", false},
		{"truncated", `{"a":`, false},
		{"malformed", `{"a" 1}`, false},
		{"too large", `{"a":"` + strings.Repeat("x", 100) + `"}`, true},
		{"LSP too large", "Content-Length: 101\r\n\r\n", true},
		{"LSP huge length", "Content-Length: 99999999999999999999999\r\n\r\n", true},
		{"LSP negative", "Content-Length: -1\r\n\r\n", false},
		{"LSP no colon", "Content-Length 2\r\n\r\n{}", false},
		{"LSP long line", "Content-Length: 2\r\nX: " + strings.Repeat("y", 1100) + "\r\n\r\n{}", false},
		{"LSP short body", "Content-Length: 10\r\n\r\n{}", false},
		{"LSP empty body", "Content-Length: 0\r\n\r\n", false},
		{"LSP two values", "Content-Length: 4\r\n\r\n{}{}", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			is := is.New(t)
			_, err := readAll(t, newFrameReader(strings.NewReader(c.in), 100), 100)
			var pe *parseError
			if c.tooLarge {
				is.True(errors.Is(err, errTooLarge)) // over the limit
			} else {
				is.True(errors.As(err, &pe)) // not a message
			}
		})
	}
}

// FuzzNewlineFraming feeds arbitrary bytes to the reader (every message it returns
// is valid JSON within the limit, and it never panics or loops), and checks that
// framed messages read back as written.
func FuzzNewlineFraming(f *testing.F) {
	for _, s := range []string{
		`{}`, "{}\n{}", `{"a":"}"}{"b":[1,2,{"c":"\\\""}]}`, ` [ ] `, `{"a":1`, `{"a":"\`, `}`,
		`{"jsonrpc":"2.0","id":1,"method":"daemon.info","params":{}}` + "\n",
		`[{"jsonrpc":"2.0","id":1,"method":"x"}]`, "{\"a\":\"\u2028\"}", `{"a":[[[[[[]]]]]]}`,
		`{]`, `{"a":1}}`, "\n\n\n", `{"` + strings.Repeat("x", 300) + `"}`,
	} {
		f.Add([]byte(s))
	}
	const max = 256
	f.Fuzz(func(t *testing.T, in []byte) {
		readAll(t, newFrameReader(bytes.NewReader(in), max), max)

		if !json.Valid(in) || !bytes.HasPrefix(bytes.TrimSpace(in), []byte("{")) {
			return
		}
		var compact bytes.Buffer
		if json.Compact(&compact, in) != nil {
			return
		}
		body := compact.Bytes()
		stream := append(frame(framingNewline, body), frame(framingNewline, body)...)
		msgs, err := readAll(t, newFrameReader(bytes.NewReader(stream), max), max)
		if len(body) > max {
			if !errors.Is(err, errTooLarge) {
				t.Fatalf("a message of %d bytes passed the limit: %v", len(body), err)
			}
			return
		}
		if err != io.EOF || len(msgs) != 2 || !bytes.Equal(msgs[0], body) || !bytes.Equal(msgs[1], body) {
			t.Fatalf("framed %q twice, read %q, %v", body, msgs, err)
		}
	})
}

// FuzzLSPFraming does the same for the Content-Length framing.
func FuzzLSPFraming(f *testing.F) {
	for _, s := range []string{
		"Content-Length: 2\r\n\r\n{}",
		"content-length: 2\r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n{}Content-Length: 2\r\n\r\n[]",
		"Content-Length: 99999999999\r\n\r\n", "Content-Length: x\r\n\r\n{}", "Content-Length: 5\r\n\r\n{}",
		"Content-Length: 2\r\n", "C", "Content-Length: 4\r\n\r\n\"ab\"", "Content-Length: 0\r\n\r\n",
		"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{} ",
	} {
		f.Add([]byte(s))
	}
	const max = 256
	f.Fuzz(func(t *testing.T, in []byte) {
		readAll(t, newFrameReader(bytes.NewReader(in), max), max)

		trimmed := bytes.TrimSpace(in)
		if !json.Valid(trimmed) || len(trimmed) == 0 {
			return
		}
		stream := append(frame(framingLSP, trimmed), frame(framingLSP, trimmed)...)
		msgs, err := readAll(t, newFrameReader(bytes.NewReader(stream), max), max)
		if len(trimmed) > max {
			if !errors.Is(err, errTooLarge) {
				t.Fatalf("a message of %d bytes passed the limit: %v", len(trimmed), err)
			}
			return
		}
		if err != io.EOF || len(msgs) != 2 || !bytes.Equal(msgs[0], trimmed) || !bytes.Equal(msgs[1], trimmed) {
			t.Fatalf("framed %q twice, read %q, %v", trimmed, msgs, err)
		}
	})
}
