package rpc

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// DecodeParams decodes the params of a request into v (a pointer to a struct) the
// strict way the protocol asks: absent or null params are {}; params that are not an
// object, an unknown field anywhere (in a job spec too, in slices and maps of
// structs), and a value of the wrong type are -32602 errors whose data names the
// field by its path, as in "job.steps[0].stpes" or "jobs[2].priority". Fields are
// matched by their exact JSON name. Values whose type decodes itself (Duration,
// StepRef, times) are checked by their own decoder; json.RawMessage fields are kept
// as they are.
func DecodeParams(raw json.RawMessage, v any) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		raw = json.RawMessage("{}")
	}
	if raw[0] != '{' {
		return &Error{Code: CodeInvalidParams, Message: "invalid params: params must be an object", Data: &ErrorData{Reason: "params must be an object"}}
	}
	return DecodeStrict(raw, v, "")
}

// DecodeStrict decodes raw into v as DecodeParams does, without its rules for the
// top level, naming fields under path (for example "spec" for a template's spec).
func DecodeStrict(raw json.RawMessage, v any, path string) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("decode params: need a non-nil pointer, got %T", v)
	}
	if !json.Valid(raw) {
		return InvalidParams(path, "must be valid JSON")
	}
	c := checker{fields: map[reflect.Type]map[string]reflect.Type{}}
	if err := c.value(raw, rv.Type().Elem(), path); err != nil {
		return err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		// The walk accepts only what the decoder accepts; this is a safety net.
		return InvalidParams(path, err.Error())
	}
	return nil
}

var (
	rawMessageType      = reflect.TypeFor[json.RawMessage]()
	timeType            = reflect.TypeFor[time.Time]()
	stepRefType         = reflect.TypeFor[StepRef]()
	jsonUnmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// checkValue checks raw, one valid JSON value, against type t.
func (c *checker) value(raw []byte, t reflect.Type, path string) error {
	if t == rawMessageType {
		return nil
	}
	isNull := string(raw) == "null"
	if t.Kind() == reflect.Pointer {
		if isNull {
			return nil
		}
		return c.value(raw, t.Elem(), path)
	}
	if t == timeType {
		if isNull {
			return nil
		}
		var tm time.Time
		if raw[0] != '"' || json.Unmarshal(raw, &tm) != nil {
			return InvalidParams(path, "must be an RFC 3339 time")
		}
		return nil
	}
	if reflect.PointerTo(t).Implements(jsonUnmarshalerType) {
		if err := json.Unmarshal(raw, reflect.New(t).Interface()); err != nil {
			if t == stepRefType {
				return InvalidParams(path, "must be a step name or index")
			}
			return InvalidParams(path, err.Error())
		}
		return nil
	}
	if reflect.PointerTo(t).Implements(textUnmarshalerType) && t.Kind() != reflect.Interface {
		if isNull {
			return nil
		}
		if raw[0] != '"' {
			return InvalidParams(path, "must be string")
		}
		if err := json.Unmarshal(raw, reflect.New(t).Interface()); err != nil {
			return InvalidParams(path, err.Error())
		}
		return nil
	}
	if isNull {
		// null leaves any other value as it is, as encoding/json does.
		return nil
	}
	switch t.Kind() {
	case reflect.Interface:
		if t.NumMethod() != 0 {
			return InvalidParams(path, "cannot be decoded")
		}
		return nil
	case reflect.Struct:
		return c.object(raw, t, path)
	case reflect.Map:
		return c.mapping(raw, t, path)
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 && raw[0] == '"' {
			var b []byte
			if json.Unmarshal(raw, &b) != nil {
				return InvalidParams(path, "must be base64")
			}
			return nil
		}
		return c.array(raw, t, path, -1)
	case reflect.Array:
		return c.array(raw, t, path, t.Len())
	case reflect.String:
		if raw[0] != '"' {
			return InvalidParams(path, "must be string")
		}
		return nil
	case reflect.Bool:
		if raw[0] != 't' && raw[0] != 'f' {
			return InvalidParams(path, "must be boolean")
		}
		return nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if !isNumber(raw) {
			return InvalidParams(path, "must be integer")
		}
		if _, err := strconv.ParseInt(string(raw), 10, t.Bits()); err != nil {
			return intError(err, path)
		}
		return nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		if !isNumber(raw) {
			return InvalidParams(path, "must be integer")
		}
		if raw[0] == '-' {
			if _, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
				return InvalidParams(path, "must not be negative")
			}
		}
		if _, err := strconv.ParseUint(string(raw), 10, t.Bits()); err != nil {
			return intError(err, path)
		}
		return nil
	case reflect.Float32, reflect.Float64:
		if !isNumber(raw) {
			return InvalidParams(path, "must be number")
		}
		if _, err := strconv.ParseFloat(string(raw), t.Bits()); err != nil {
			return InvalidParams(path, "number out of range")
		}
		return nil
	}
	return InvalidParams(path, "cannot be decoded")
}

func isNumber(raw []byte) bool { return raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9' }

func intError(err error, path string) error {
	if errors.Is(err, strconv.ErrRange) {
		return InvalidParams(path, "integer out of range")
	}
	return InvalidParams(path, "must be integer")
}

// checker walks a JSON value along a Go type. It keeps the fields of the struct
// types it met, for the many specs of one batch.
type checker struct {
	fields map[reflect.Type]map[string]reflect.Type
}

// structFields lists the fields encoding/json would decode into t, by exact name.
func (c *checker) structFields(t reflect.Type) map[string]reflect.Type {
	if f, ok := c.fields[t]; ok {
		return f
	}
	fields := map[string]reflect.Type{}
	var walk func(t reflect.Type, depth int)
	walk = func(t reflect.Type, depth int) {
		if depth > 8 {
			return
		}
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("json")
			if tag == "-" {
				continue
			}
			name, _, _ := strings.Cut(tag, ",")
			if f.Anonymous && name == "" {
				et := f.Type
				if et.Kind() == reflect.Pointer {
					et = et.Elem()
				}
				if et.Kind() == reflect.Struct {
					walk(et, depth+1)
					continue
				}
			}
			if !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			if _, dup := fields[name]; !dup || depth == 0 {
				fields[name] = f.Type
			}
		}
	}
	walk(t, 0)
	c.fields[t] = fields
	return fields
}

func (c *checker) object(raw []byte, t reflect.Type, path string) error {
	if raw[0] != '{' {
		return InvalidParams(path, "must be object")
	}
	fields := c.structFields(t)
	return eachMember(raw, func(key string, val []byte) error {
		sub := joinField(path, key)
		ft, ok := fields[key]
		if !ok {
			return InvalidParams(sub, "unknown field")
		}
		return c.value(val, ft, sub)
	})
}

func (c *checker) mapping(raw []byte, t reflect.Type, path string) error {
	if raw[0] != '{' {
		return InvalidParams(path, "must be object")
	}
	kt := t.Key()
	return eachMember(raw, func(key string, val []byte) error {
		sub := joinKey(path, key)
		switch {
		case kt.Kind() == reflect.String:
		case reflect.PointerTo(kt).Implements(textUnmarshalerType):
		case kt.Kind() >= reflect.Int && kt.Kind() <= reflect.Int64:
			if _, err := strconv.ParseInt(key, 10, kt.Bits()); err != nil {
				return InvalidParams(sub, "key must be integer")
			}
		case kt.Kind() >= reflect.Uint && kt.Kind() <= reflect.Uintptr:
			if _, err := strconv.ParseUint(key, 10, kt.Bits()); err != nil {
				return InvalidParams(sub, "key must be integer")
			}
		default:
			return InvalidParams(sub, "cannot be decoded")
		}
		return c.value(val, t.Elem(), sub)
	})
}

func (c *checker) array(raw []byte, t reflect.Type, path string, n int) error {
	if raw[0] != '[' {
		return InvalidParams(path, "must be array")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil {
		return InvalidParams(path, "must be array")
	}
	for i := 0; dec.More(); i++ {
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return InvalidParams(path, "must be array")
		}
		if n >= 0 && i >= n {
			continue // encoding/json drops the extra elements of an array
		}
		if err := c.value(val, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
			return err
		}
	}
	return nil
}

// eachMember calls f with each member of the JSON object raw, in order.
func eachMember(raw []byte, f func(key string, val []byte) error) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil {
		return InvalidParams("", "must be object")
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return InvalidParams("", "must be object")
		}
		key, _ := tok.(string)
		var val json.RawMessage
		if err := dec.Decode(&val); err != nil {
			return InvalidParams(key, "invalid value")
		}
		if err := f(key, val); err != nil {
			return err
		}
	}
	if _, err := dec.Token(); err != nil && err != io.EOF {
		return InvalidParams("", "must be object")
	}
	return nil
}

func joinField(path, name string) string {
	if !plainName(name) {
		return joinKey(path, name)
	}
	if path == "" {
		return name
	}
	return path + "." + name
}

// joinKey names a map entry: path.key for plain keys, path["odd key"] otherwise.
func joinKey(path, key string) string {
	if plainName(key) {
		if path == "" {
			return key
		}
		return path + "." + key
	}
	q, _ := json.Marshal(key)
	return path + "[" + string(q) + "]"
}

func plainName(s string) bool {
	if s == "" || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
