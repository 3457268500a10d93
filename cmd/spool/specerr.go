package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"spool/rpc"
	"spool/rpc/codec"
)

// specError is a mistake in a spec file: where (line and column, from 1), the
// field's path, and what is wrong.
type specError struct {
	line, col int
	field     string
	reason    string
}

func (e *specError) Error() string {
	msg := fmt.Sprintf("%d:%d: ", e.line, e.col)
	if e.field != "" {
		msg += e.field + ": "
	}
	return msg + e.reason
}

// decodeSpecFile decodes data strictly into v with rpc's decoder (as the daemon
// does), and on a mistake says where it is: line and column, the field's path,
// and what was expected against what was found.
func decodeSpecFile(data []byte, v any) error {
	if !json.Valid(data) {
		var syn *json.SyntaxError
		var probe any
		err := json.Unmarshal(data, &probe)
		if errors.As(err, &syn) {
			line, col := lineCol(data, int(syn.Offset)-1)
			return &specError{line: line, col: col, reason: "invalid JSON: " + syn.Error()}
		}
		return fmt.Errorf("invalid JSON: %w", err)
	}
	err := codec.NewDecoder().Strict(data, v, "")
	if err == nil {
		return nil
	}
	var re *rpc.Error
	if !errors.As(err, &re) || re.Data == nil {
		return err
	}
	field, reason := re.Data.Field, re.Data.Reason
	key, val := locate(data, field)
	at := val
	if reason == "unknown field" {
		at = key
	} else {
		reason = expected(reason, data[val:])
	}
	line, col := lineCol(data, at)
	return &specError{line: line, col: col, field: field, reason: reason}
}

// expected rewrites the decoder's "must be integer" as "expected an integer, got a
// string", and says the syntax of durations.
func expected(reason string, value []byte) string {
	if what, ok := strings.CutPrefix(reason, "must be "); ok && !strings.Contains(what, " ") {
		return "expected " + article(what) + ", got " + kindOf(value)
	}
	if strings.HasPrefix(reason, "invalid duration") {
		return reason + ": write a number with a unit, e.g. \"90s\", \"2m\", \"1h30m\""
	}
	return reason
}

func article(w string) string {
	if w != "" && strings.ContainsRune("aeiou", rune(w[0])) {
		return "an " + w
	}
	return "a " + w
}

// kindOf names the JSON value that starts value.
func kindOf(value []byte) string {
	if len(value) == 0 {
		return "nothing"
	}
	switch c := value[0]; {
	case c == '"':
		return "a string"
	case c == '{':
		return "an object"
	case c == '[':
		return "an array"
	case c == 't' || c == 'f':
		return "a boolean"
	case c == 'n':
		return "null"
	case bytes.ContainsAny(value[:skipValue(value, 0)], ".eE"):
		return "a number with a fraction"
	}
	return "a number"
}

// lineCol turns a byte offset into a line and a column (in characters), from 1.
func lineCol(data []byte, off int) (line, col int) {
	off = max(0, min(off, len(data)))
	before := data[:off]
	line = bytes.Count(before, []byte("\n")) + 1
	start := bytes.LastIndexByte(before, '\n') + 1
	return line, len([]rune(string(before[start:]))) + 1
}

// pathSeg is one step of a field path: a name, or an index.
type pathSeg struct {
	name  string
	index int
	isIdx bool
}

// parsePath splits a path as rpc spells it: steps[0].retry.attempts, env["A B"].
func parsePath(path string) []pathSeg {
	var segs []pathSeg
	for path != "" {
		switch path[0] {
		case '.':
			path = path[1:]
		case '[':
			end := strings.IndexByte(path, ']')
			if len(path) > 1 && path[1] == '"' {
				// a quoted key: find its closing quote
				var key string
				dec := json.NewDecoder(strings.NewReader(path[1:]))
				if dec.Decode(&key) != nil {
					return segs
				}
				segs = append(segs, pathSeg{name: key})
				path = strings.TrimPrefix(path[1+int(dec.InputOffset()):], "]")
				continue
			}
			if end < 0 {
				return segs
			}
			n, err := strconv.Atoi(path[1:end])
			if err != nil {
				return segs
			}
			segs = append(segs, pathSeg{index: n, isIdx: true})
			path = path[end+1:]
		default:
			end := strings.IndexAny(path, ".[")
			if end < 0 {
				end = len(path)
			}
			segs = append(segs, pathSeg{name: path[:end]})
			path = path[end:]
		}
	}
	return segs
}

// locate finds the field at path in data (valid JSON): the offset of its key (of
// its value for an array element) and of its value. When only a part of the path
// is found, the deepest part found.
func locate(data []byte, path string) (key, val int) {
	i := skipWS(data, 0)
	key, val = i, i
	for _, sg := range parsePath(path) {
		found := false
		if sg.isIdx {
			if i >= len(data) || data[i] != '[' {
				return key, val
			}
			i = skipWS(data, i+1)
			for n := 0; i < len(data) && data[i] != ']'; n++ {
				if n == sg.index {
					key, val, found = i, i, true
					break
				}
				i = skipWS(data, skipValue(data, i))
				if i < len(data) && data[i] == ',' {
					i = skipWS(data, i+1)
				}
			}
		} else {
			if i >= len(data) || data[i] != '{' {
				return key, val
			}
			i = skipWS(data, i+1)
			for i < len(data) && data[i] == '"' {
				kStart, kEnd := i, skipValue(data, i)
				var k string
				_ = json.Unmarshal(data[kStart:kEnd], &k)
				i = skipWS(data, kEnd)
				if i < len(data) && data[i] == ':' {
					i = skipWS(data, i+1)
				}
				if k == sg.name {
					key, val, found = kStart, i, true
					break
				}
				i = skipWS(data, skipValue(data, i))
				if i < len(data) && data[i] == ',' {
					i = skipWS(data, i+1)
				}
			}
		}
		if !found {
			return key, val
		}
		i = val
	}
	return key, val
}

func skipWS(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the offset just past the JSON value that starts at i.
func skipValue(data []byte, i int) int {
	if i >= len(data) {
		return i
	}
	switch data[i] {
	case '"':
		for i++; i < len(data); i++ {
			switch data[i] {
			case '\\':
				i++
			case '"':
				return i + 1
			}
		}
		return i
	case '{', '[':
		depth := 0
		for ; i < len(data); i++ {
			switch data[i] {
			case '"':
				i = skipValue(data, i) - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return i
	}
	for i < len(data) && !strings.ContainsRune(",]} \t\r\n", rune(data[i])) {
		i++
	}
	return i
}
