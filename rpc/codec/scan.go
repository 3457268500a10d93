package codec

// The JSON scanner under the decoder (strict and lenient) and the request parser: it moves over
// JSON text, checking its syntax, without decoding what it does not need.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// maxDepth is how deep values may nest, as in encoding/json.
const maxDepth = 10000

// errSyntax stands for JSON that does not parse; the check reports it at the root.
var errSyntax = errors.New("syntax")

// segment is one step of a path: a struct field, a map key or an array index.
type segment struct {
	name  []byte // the key as written (without quotes), or nil for an index
	esc   bool   // name holds escapes
	field bool   // a struct field rather than a map key
	index int
}

// scanner moves over one JSON text. The strict decoder checks it against a plan,
// and names the value under the cursor for errors by root and path.
type scanner struct {
	data    []byte
	i       int  // the cursor
	depth   int  // objects and arrays open at the cursor
	lenient bool // skip unknown members of structs, match keys in any case
	root    string
	path    []segment
}

// ws moves past white space.
func (s *scanner) ws() {
	for s.i < len(s.data) {
		switch s.data[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek skips white space and returns the next byte, or 0 at the end.
func (s *scanner) peek() byte {
	s.ws()
	if s.i < len(s.data) {
		return s.data[s.i]
	}
	return 0
}

func (s *scanner) literal(word string) error {
	if !bytes.HasPrefix(s.data[s.i:], []byte(word)) {
		return errSyntax
	}
	s.i += len(word)
	return nil
}

var errNotNumber = errors.New("not a number")

// num moves past a JSON number and says whether it is written as an integer (no
// fraction, no exponent). A value that is not a number at all is errNotNumber.
func (s *scanner) num() (integral bool, err error) {
	d := s.data
	i := s.i
	if i < len(d) && d[i] == '-' {
		i++
	}
	if i >= len(d) || d[i] < '0' || d[i] > '9' {
		if i == s.i {
			return false, errNotNumber
		}
		return false, errSyntax
	}
	if d[i] == '0' {
		i++
	} else {
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	}
	integral = true
	if i < len(d) && d[i] == '.' {
		integral = false
		i++
		if i >= len(d) || d[i] < '0' || d[i] > '9' {
			return false, errSyntax
		}
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		integral = false
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if i >= len(d) || d[i] < '0' || d[i] > '9' {
			return false, errSyntax
		}
		for i < len(d) && d[i] >= '0' && d[i] <= '9' {
			i++
		}
	}
	s.i = i
	return integral, nil
}

// str moves past a JSON string at the cursor, checking its escapes, and says
// whether it holds any.
func (s *scanner) str() (esc bool, err error) {
	d := s.data
	i := s.i + 1
	for i < len(d) {
		c := d[i]
		switch {
		case c == '"':
			s.i = i + 1
			return esc, nil
		case c == '\\':
			esc = true
			if i+1 >= len(d) {
				return false, errSyntax
			}
			switch d[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(d) {
					return false, errSyntax
				}
				for _, h := range d[i+2 : i+6] {
					if !(h >= '0' && h <= '9' || h >= 'a' && h <= 'f' || h >= 'A' && h <= 'F') {
						return false, errSyntax
					}
				}
				i += 6
			default:
				return false, errSyntax
			}
		case c < 0x20:
			return false, errSyntax
		default:
			i++
		}
	}
	return false, errSyntax
}

// skip moves past any JSON value, checking its syntax.
func (s *scanner) skip() error {
	switch s.peek() {
	case '{':
		return s.members(func([]byte, bool) error { return s.skip() })
	case '[':
		return s.elements(func(int) error { return s.skip() })
	case '"':
		_, err := s.str()
		return err
	case 't':
		return s.literal("true")
	case 'f':
		return s.literal("false")
	case 'n':
		return s.literal("null")
	default:
		_, err := s.num()
		if err == errNotNumber {
			return errSyntax
		}
		return err
	}
}

// members walks the object at the cursor. For each member it reads the key and
// the colon, then calls f with the key as written (between its quotes; esc when it
// holds escapes), and f moves past the value.
func (s *scanner) members(f func(name []byte, esc bool) error) error {
	if s.peek() != '{' {
		return errSyntax
	}
	return s.container('}', func() error {
		if s.peek() != '"' {
			return errSyntax
		}
		start := s.i
		esc, err := s.str()
		if err != nil {
			return err
		}
		name := s.data[start+1 : s.i-1]
		if s.peek() != ':' {
			return errSyntax
		}
		s.i++
		return f(name, esc)
	})
}

// elements walks the array at the cursor, calling f with each element's index; f
// moves past the element.
func (s *scanner) elements(f func(i int) error) error {
	if s.peek() != '[' {
		return errSyntax
	}
	i := 0
	return s.container(']', func() error {
		err := f(i)
		i++
		return err
	})
}

// container moves past the opening bracket at the cursor, then calls item for each
// comma-separated item until the closing bracket, within maxDepth.
func (s *scanner) container(closing byte, item func() error) error {
	if s.depth++; s.depth > maxDepth {
		return errSyntax
	}
	s.i++
	if s.peek() == closing {
		s.i++
		s.depth--
		return nil
	}
	for {
		if err := item(); err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.i++
		case closing:
			s.i++
			s.depth--
			return nil
		default:
			return errSyntax
		}
	}
}

// unquote decodes the escapes of a JSON string's contents.
func unquote(name []byte) string {
	var v string
	q := make([]byte, 0, len(name)+2)
	q = append(append(append(q, '"'), name...), '"')
	if json.Unmarshal(q, &v) != nil {
		return string(name)
	}
	return v
}

// Members calls f with each member of the JSON object msg, in order, with keys
// unescaped, in one pass that also checks msg's syntax. The slices it passes are
// parts of msg. Clients use it to take a message apart without decoding it.
func Members(msg []byte, f func(key []byte, val json.RawMessage)) error {
	if err := eachMember(msg, f); err != nil {
		return fmt.Errorf("read a JSON object: %w", err)
	}
	return nil
}

// eachMember calls f with each member of the JSON object msg, in order, with keys
// unescaped. The slices it passes are parts of msg.
func eachMember(msg []byte, f func(key []byte, val json.RawMessage)) error {
	s := scanner{data: msg}
	err := s.members(func(name []byte, esc bool) error {
		key := name
		if esc {
			key = []byte(unquote(name))
		}
		s.ws()
		start := s.i
		if err := s.skip(); err != nil {
			return err
		}
		f(key, msg[start:s.i:s.i])
		return nil
	})
	if err != nil {
		return err
	}
	if s.ws(); s.i != len(msg) {
		return errSyntax
	}
	return nil
}

// StringValue decodes a JSON string value; ok is false for any other value.
func StringValue(raw []byte) (string, bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", false
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1]), true
	}
	var v string
	if json.Unmarshal(raw, &v) != nil {
		return "", false
	}
	return v, true
}
