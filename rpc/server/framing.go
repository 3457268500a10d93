package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// framing is how the messages of a connection are delimited.
type framing int

const (
	// framingUnknown: no message was read yet.
	framingUnknown framing = iota
	// framingNewline: JSON values, each written followed by one newline.
	framingNewline
	// framingLSP: a "Content-Length: N" header, an empty line, N bytes of JSON.
	framingLSP
)

// Limits of the LSP framing's header.
const (
	maxHeaderLine  = 1 << 10
	maxHeaderLines = 32
	readBufferSize = 32 << 10
)

// errTooLarge is returned by frameReader.next for a message over the limit; the
// rest of the message was not read.
var errTooLarge = errors.New("message too large")

// parseError is returned by frameReader.next for bytes that are not a message of
// the connection's framing.
type parseError struct{ reason string }

func (e *parseError) Error() string { return "parse error: " + e.reason }

// frameReader reads one message at a time from a connection, never holding more
// than max bytes of a message in memory. The framing is chosen from the first byte
// that is not white space.
type frameReader struct {
	br   *bufio.Reader
	max  int64
	mode framing
}

func newFrameReader(r io.Reader, max int64) *frameReader {
	return &frameReader{br: bufio.NewReaderSize(r, readBufferSize), max: max}
}

// next returns the next message: the bytes of one valid JSON value. At the end of
// the stream between messages it returns io.EOF; for a message over the limit
// errTooLarge; for bytes that are no message a *parseError; otherwise the error of
// the connection.
func (r *frameReader) next() ([]byte, error) {
	b, err := r.skipSpace()
	if err != nil {
		return nil, err
	}
	if r.mode == framingUnknown {
		switch b {
		case '{', '[':
			r.mode = framingNewline
		case 'C', 'c':
			r.mode = framingLSP
		default:
			return nil, &parseError{"a message starts with '{', '[' or a Content-Length header"}
		}
	}
	if r.mode == framingLSP {
		return r.nextLSP()
	}
	return r.nextJSON(b)
}

// skipSpace consumes white space and returns the next byte without consuming it.
func (r *frameReader) skipSpace() (byte, error) {
	for {
		b, err := r.br.ReadByte()
		if err != nil {
			return 0, err
		}
		switch b {
		case ' ', '\t', '\r', '\n':
			continue
		}
		if err := r.br.UnreadByte(); err != nil {
			return 0, err
		}
		return b, nil
	}
}

// nextJSON reads one JSON object or array starting at first, scanning for its end
// (strings and nesting) without decoding it.
func (r *frameReader) nextJSON(first byte) ([]byte, error) {
	if first != '{' && first != '[' {
		return nil, &parseError{"a message must be a JSON object"}
	}
	var msg []byte
	depth := 0
	inString, escaped := false, false
	for {
		if _, err := r.br.Peek(1); err != nil {
			if err == io.EOF {
				return nil, &parseError{"the stream ended inside a message"}
			}
			return nil, err
		}
		chunk, _ := r.br.Peek(r.br.Buffered())
		end := -1
	scan:
		for i, c := range chunk {
			if inString {
				switch {
				case escaped:
					escaped = false
				case c == '\\':
					escaped = true
				case c == '"':
					inString = false
				}
				continue
			}
			switch c {
			case '"':
				inString = true
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth <= 0 {
					end = i
					break scan
				}
			}
		}
		n := len(chunk)
		if end >= 0 {
			n = end + 1
		}
		if int64(len(msg))+int64(n) > r.max {
			return nil, errTooLarge
		}
		msg = append(msg, chunk[:n]...)
		if _, err := r.br.Discard(n); err != nil {
			return nil, err
		}
		if end >= 0 {
			if !json.Valid(msg) {
				return nil, &parseError{"malformed JSON"}
			}
			return msg, nil
		}
	}
}

// nextLSP reads a header block and the body it announces.
func (r *frameReader) nextLSP() ([]byte, error) {
	length := int64(-1)
	for lines := 0; ; lines++ {
		line, err := r.readLine()
		if err != nil {
			return nil, err
		}
		if len(line) == 0 {
			break
		}
		if lines >= maxHeaderLines {
			return nil, &parseError{"too many header lines"}
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return nil, &parseError{"malformed header line"}
		}
		if strings.EqualFold(strings.TrimSpace(name), "Content-Length") {
			n, err := strconv.ParseInt(strings.TrimSpace(value), 10, 64)
			if err != nil && errors.Is(err, strconv.ErrRange) {
				return nil, errTooLarge
			}
			if err != nil || n < 0 {
				return nil, &parseError{"Content-Length is not a length"}
			}
			length = n
		}
	}
	if length < 0 {
		return nil, &parseError{"no Content-Length header"}
	}
	if length > r.max {
		return nil, errTooLarge
	}
	// The body is read as it comes: a header alone does not reserve its length.
	var buf bytes.Buffer
	buf.Grow(int(min(length, 64<<10)))
	if _, err := io.CopyN(&buf, r.br, length); err != nil {
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil, &parseError{"the stream ended inside a message"}
		}
		return nil, err
	}
	msg := bytes.TrimSpace(buf.Bytes())
	if len(msg) == 0 || !json.Valid(msg) {
		return nil, &parseError{"malformed JSON"}
	}
	return msg, nil
}

// readLine reads a header line of at most maxHeaderLine bytes, without its "\r\n".
func (r *frameReader) readLine() (string, error) {
	var line []byte
	for {
		b, err := r.br.ReadByte()
		if err != nil {
			if err == io.EOF {
				return "", &parseError{"the stream ended inside a header"}
			}
			return "", err
		}
		if b == '\n' {
			return string(bytes.TrimSuffix(line, []byte{'\r'})), nil
		}
		if len(line) >= maxHeaderLine {
			return "", &parseError{fmt.Sprintf("header line longer than %d bytes", maxHeaderLine)}
		}
		line = append(line, b)
	}
}

// frame delimits the encoded message body for the framing mode: a newline after it,
// or an LSP header before it. body holds no newline (encoding/json escapes them).
func frame(mode framing, body []byte) []byte {
	return appendFrame(make([]byte, 0, len(body)+32), mode, body)
}

// appendFrame appends body, framed, to out.
func appendFrame(out []byte, mode framing, body []byte) []byte {
	if mode == framingLSP {
		out = append(out, "Content-Length: "...)
		out = strconv.AppendInt(out, int64(len(body)), 10)
		out = append(out, "\r\n\r\n"...)
		return append(out, body...)
	}
	out = append(out, body...)
	return append(out, '\n')
}
