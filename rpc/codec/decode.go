// Package codec decodes the protocol's JSON: strictly for params and job specs
// (an unknown field or a wrong type is -32602 naming the field by its path), and
// leniently for what a client or the store reads back (unknown fields ignored).
// It also takes a JSON-RPC message apart without decoding it. It imports rpc for
// the types and errors, and the standard library; the server, the client, the
// daemon and the store import it.
package codec

// Decoding JSON in one pass guided by a plan of the target type: strictly, for
// request params (DecodeParams, Decoder.Params, Decoder.Strict), and leniently,
// as encoding/json does, for stored data and answers (Decoder.Lenient).

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"spool/rpc"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// DecodeParams decodes the params of a request into v (a pointer to a struct) the
// strict way the protocol asks: absent or null params are {}; params that are not an
// object, an unknown field anywhere (in a job spec too, in slices and maps of
// structs), and a value of the wrong type are -32602 errors whose data names the
// field by its path, as in "job.steps[0].stpes" or "jobs[2].priority". Fields are
// matched by their exact JSON name. Values whose type decodes itself (Duration,
// StepRef, times) are checked by their own decoder; json.RawMessage fields are kept
// as they are.
//
// DecodeParams works out the shape of v's type on every call; a server decodes
// through one Decoder, which keeps it.
func DecodeParams(raw json.RawMessage, v any) error {
	return NewDecoder().Params(raw, v)
}

// DecodeStrict decodes raw into v as DecodeParams does, without its rules for the
// top level, naming fields under path (for example "spec" for a template's spec).
func DecodeStrict(raw json.RawMessage, v any, path string) error {
	return NewDecoder().Strict(raw, v, path)
}

// Decoder decodes params strictly (see DecodeParams). It keeps what it learnt of
// each Go type it met, so one Decoder serves every request of a server. It is safe
// for concurrent use.
type Decoder struct {
	plans sync.Map // reflect.Type -> *plan
	mu    sync.Mutex
}

// NewDecoder returns a Decoder that knows no types yet.
func NewDecoder() *Decoder { return &Decoder{} }

// Params decodes the params of a request into v, as DecodeParams.
func (d *Decoder) Params(raw json.RawMessage, v any) error {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		raw = json.RawMessage("{}")
	}
	if raw[0] != '{' {
		return &rpc.Error{Code: rpc.CodeInvalidParams, Message: "invalid params: params must be an object", Data: &rpc.ErrorData{Reason: "params must be an object"}}
	}
	return d.Strict(raw, v, "")
}

// Lenient decodes raw, one JSON value, into v (a non-nil pointer) as
// encoding/json.Unmarshal does: it is how a client reads what a server sends, and
// a newer server may send more than the client knows of. Members of an object that
// match no field of its struct are skipped (their syntax checked, as
// encoding/json does); a key matches its field exactly first, else in any case, as
// in encoding/json. Malformed JSON and values of the wrong type are errors, which
// name the value by its path; they are plain errors, never an *Error, since
// nothing was refused by a server. On an error, v may be partly set.
//
// It is the same one pass as Strict, with the same plans: one Decoder serves both.
func (d *Decoder) Lenient(raw []byte, v any) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("decode JSON: need a non-nil pointer, got %T", v)
	}
	s := scanner{data: raw, lenient: true}
	if err := s.decode(d.plan(rv.Type().Elem()), rv.Elem()); err != nil {
		var e *rpc.Error
		if errors.As(err, &e) && e.Data != nil {
			if e.Data.Field == "" {
				return fmt.Errorf("decode JSON: %s", e.Data.Reason)
			}
			return fmt.Errorf("decode JSON: %s: %s", e.Data.Field, e.Data.Reason)
		}
		return fmt.Errorf("decode JSON: %v", err)
	}
	return nil
}

// Strict decodes raw into v, as DecodeStrict.
//
// It is one pass over the bytes, guided by a plan of v's type: it checks the
// syntax, every key against the fields of its struct and every value against its
// field's type, decoding as it goes, and builds a field's path only for an error.
// What it decodes is what encoding/json would.
func (d *Decoder) Strict(raw json.RawMessage, v any, path string) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("decode params: need a non-nil pointer, got %T", v)
	}
	s := scanner{data: raw, root: path}
	return s.decode(d.plan(rv.Type().Elem()), rv.Elem())
}

var (
	rawMessageType      = reflect.TypeFor[json.RawMessage]()
	timeType            = reflect.TypeFor[time.Time]()
	stepRefType         = reflect.TypeFor[rpc.StepRef]()
	durationType        = reflect.TypeFor[rpc.Duration]()
	jsonUnmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// class is what a plan checks a JSON value against.
type class uint8

const (
	classAny         class = iota // json.RawMessage, any: any value
	classPointer                  // null, or the element's value
	classTime                     // null, or an RFC 3339 string
	classUnmarshaler              // the type's own UnmarshalJSON decides
	classText                     // null, or a string the type's UnmarshalText takes
	classStruct
	classMap
	classBytes // base64 string, or an array of bytes
	classSlice
	classArray
	classString
	classBool
	classInt
	classUint
	classFloat
	classInvalid // nothing decodes into it
)

// plan is what the check knows of one Go type.
type plan struct {
	t      reflect.Type
	class  class
	elem   *plan            // pointer, slice, array, map: the element
	fields map[string]field // struct: fields by exact JSON name
	folded map[string]field // struct: fields by folded JSON name (see foldName), for Lenient
	key    reflect.Kind     // map: the key's kind (String for text keys)
	keyOK  bool             // map: keys can decode
	bits   int              // numbers: size
	n      int              // array: length
}

// field is a struct field: its plan and where it is (embedded structs included).
type field struct {
	plan  *plan
	index []int
}

// plan returns the plan of t, working it out once.
func (d *Decoder) plan(t reflect.Type) *plan {
	if p, ok := d.plans.Load(t); ok {
		return p.(*plan)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	building := map[reflect.Type]*plan{}
	p := d.build(t, building)
	for t, p := range building {
		d.plans.Store(t, p)
	}
	return p
}

// build works out the plan of t and of the types in it; building holds the plans
// being built, for types that contain themselves.
func (d *Decoder) build(t reflect.Type, building map[reflect.Type]*plan) *plan {
	if p, ok := d.plans.Load(t); ok {
		return p.(*plan)
	}
	if p, ok := building[t]; ok {
		return p
	}
	p := &plan{t: t}
	building[t] = p
	switch {
	case t == rawMessageType:
		p.class = classAny
	case t.Kind() == reflect.Pointer:
		p.class = classPointer
		p.elem = d.build(t.Elem(), building)
	case t == timeType:
		p.class = classTime
	case reflect.PointerTo(t).Implements(jsonUnmarshalerType):
		p.class = classUnmarshaler
	case reflect.PointerTo(t).Implements(textUnmarshalerType) && t.Kind() != reflect.Interface:
		p.class = classText
	default:
		switch t.Kind() {
		case reflect.Interface:
			p.class = classAny
			if t.NumMethod() != 0 {
				p.class = classInvalid
			}
		case reflect.Struct:
			p.class = classStruct
			p.fields = map[string]field{}
			sf := structFields(t)
			for name, f := range sf {
				p.fields[name] = field{plan: d.build(f.Type, building), index: f.Index}
			}
			// As in encoding/json, of the fields whose names fold alike the first
			// in the struct's order takes a key that matches none exactly.
			names := slices.SortedFunc(maps.Keys(sf), func(a, b string) int {
				return slices.Compare(sf[a].Index, sf[b].Index)
			})
			p.folded = make(map[string]field, len(names))
			for _, name := range names {
				k := string(foldName(nil, []byte(name)))
				if _, dup := p.folded[k]; !dup {
					p.folded[k] = p.fields[name]
				}
			}
		case reflect.Map:
			p.class = classMap
			p.elem = d.build(t.Elem(), building)
			kt := t.Key()
			switch {
			case kt.Kind() == reflect.String || reflect.PointerTo(kt).Implements(textUnmarshalerType):
				p.key, p.keyOK = reflect.String, true
			case kt.Kind() >= reflect.Int && kt.Kind() <= reflect.Uintptr:
				p.key, p.keyOK, p.bits = kt.Kind(), true, kt.Bits()
			}
		case reflect.Slice:
			p.class = classSlice
			if t.Elem().Kind() == reflect.Uint8 {
				p.class = classBytes
			}
			p.elem = d.build(t.Elem(), building)
		case reflect.Array:
			p.class = classArray
			p.n = t.Len()
			p.elem = d.build(t.Elem(), building)
		case reflect.String:
			p.class = classString
		case reflect.Bool:
			p.class = classBool
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			p.class, p.bits = classInt, t.Bits()
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
			p.class, p.bits = classUint, t.Bits()
		case reflect.Float32, reflect.Float64:
			p.class, p.bits = classFloat, t.Bits()
		default:
			p.class = classInvalid
		}
	}
	return p
}

// structFields lists the fields encoding/json would decode into t, by exact name,
// each with its index from t (through embedded structs).
func structFields(t reflect.Type) map[string]reflect.StructField {
	fields := map[string]reflect.StructField{}
	depthOf := map[string]int{}
	var walk func(t reflect.Type, index []int, depth int)
	walk = func(t reflect.Type, index []int, depth int) {
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
			f.Index = append(append([]int(nil), index...), i)
			if f.Anonymous && name == "" {
				et := f.Type
				if et.Kind() == reflect.Pointer {
					et = et.Elem()
				}
				if et.Kind() == reflect.Struct {
					walk(et, f.Index, depth+1)
					continue
				}
			}
			if !f.IsExported() {
				continue
			}
			if name == "" {
				name = f.Name
			}
			if d, dup := depthOf[name]; !dup || depth < d {
				fields[name], depthOf[name] = f, depth
			}
		}
	}
	walk(t, nil, 0)
	return fields
}

// decode checks that data is one JSON value that fits p, and nothing more, and
// decodes it into v.
func (s *scanner) decode(p *plan, v reflect.Value) error {
	err := s.value(p, v)
	if err == nil {
		s.ws()
		if s.i != len(s.data) {
			err = errSyntax
		}
	}
	if err == errSyntax {
		return rpc.InvalidParams(s.root, "must be valid JSON")
	}
	return err
}

// fail is a -32602 error for the value at the current path.
func (s *scanner) fail(reason string) error {
	return rpc.InvalidParams(s.pathString(), reason)
}

// pathString spells the current path, e.g. job.steps[0].exec.argv[1].
func (s *scanner) pathString() string {
	path := s.root
	for _, seg := range s.path {
		switch {
		case seg.name == nil:
			path = fmt.Sprintf("%s[%d]", path, seg.index)
		default:
			name := string(seg.name)
			if seg.esc {
				name = unquote(seg.name)
			}
			if seg.field {
				path = rpc.FieldPath(path, name)
			} else {
				path = rpc.KeyPath(path, name)
			}
		}
	}
	return path
}

// value checks the value at the cursor against p, decodes it into v (settable, of
// p's type) and moves past it.
func (s *scanner) value(p *plan, v reflect.Value) error {
	c := s.peek()
	if c == 0 {
		return errSyntax
	}
	if c == 'n' && p.class != classUnmarshaler && p.class != classTime {
		// null sets pointers, maps, slices and interfaces to nil and leaves any
		// other value as it is, as encoding/json does; a type that decodes
		// itself is asked.
		if err := s.literal("null"); err != nil {
			return err
		}
		switch {
		case p.t == rawMessageType:
			v.SetBytes([]byte("null"))
		case p.class == classText:
			return s.delegate(s.i-4, p, v)
		default:
			switch v.Kind() {
			case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Interface:
				v.SetZero()
			}
		}
		return nil
	}
	switch p.class {
	case classAny:
		start := s.i
		if err := s.skip(); err != nil {
			return err
		}
		if p.t == rawMessageType {
			v.SetBytes(append([]byte(nil), s.data[start:s.i]...))
			return nil
		}
		return s.delegate(start, p, v)
	case classPointer:
		if v.IsNil() {
			v.Set(reflect.New(p.t.Elem()))
		}
		return s.value(p.elem, v.Elem())
	case classTime:
		start := s.i
		if err := s.skip(); err != nil {
			return err
		}
		if c != '"' && c != 'n' {
			return s.fail("must be an RFC 3339 time")
		}
		if v.Addr().Interface().(json.Unmarshaler).UnmarshalJSON(s.data[start:s.i]) != nil {
			return s.fail("must be an RFC 3339 time")
		}
		return nil
	case classUnmarshaler:
		start := s.i
		if err := s.skip(); err != nil {
			return err
		}
		if p.t == durationType && s.duration(start, v) {
			return nil
		}
		if err := v.Addr().Interface().(json.Unmarshaler).UnmarshalJSON(s.data[start:s.i]); err != nil {
			if p.t == stepRefType {
				return s.fail("must be a step name or index")
			}
			return s.fail(err.Error())
		}
		return nil
	case classText:
		start := s.i
		if err := s.skip(); err != nil {
			return err
		}
		if c != '"' {
			return s.fail("must be string")
		}
		return s.delegate(start, p, v)
	case classStruct:
		if c != '{' {
			return s.failSkip("must be object")
		}
		return s.object(p, v)
	case classMap:
		if c != '{' {
			return s.failSkip("must be object")
		}
		return s.object(p, v)
	case classBytes:
		if c == '"' {
			start := s.i
			if err := s.skip(); err != nil {
				return err
			}
			if json.Unmarshal(s.data[start:s.i], v.Addr().Interface()) != nil {
				return s.fail("must be base64")
			}
			return nil
		}
		if c != '[' {
			return s.failSkip("must be array")
		}
		return s.array(p, v)
	case classSlice, classArray:
		if c != '[' {
			return s.failSkip("must be array")
		}
		return s.array(p, v)
	case classString:
		if c != '"' {
			return s.failSkip("must be string")
		}
		start := s.i
		esc, err := s.str()
		if err != nil {
			return err
		}
		body := s.data[start+1 : s.i-1]
		if esc || !utf8.Valid(body) {
			var str string
			if json.Unmarshal(s.data[start:s.i], &str) != nil {
				return s.fail("must be string")
			}
			v.SetString(str)
			return nil
		}
		v.SetString(string(body))
		return nil
	case classBool:
		switch c {
		case 't':
			v.SetBool(true)
			return s.literal("true")
		case 'f':
			v.SetBool(false)
			return s.literal("false")
		}
		return s.failSkip("must be boolean")
	case classInt, classUint, classFloat:
		return s.number(p, v)
	}
	return s.failSkip("cannot be decoded")
}

// duration decodes the duration string from start to the cursor into v (a
// Duration) without going through encoding/json, when it is plain (no escapes)
// and valid. Anything else is left to Duration's own decoder, which then says
// what is wrong; what this decodes, that decoder would decode alike.
func (s *scanner) duration(start int, v reflect.Value) bool {
	tok := s.data[start:s.i]
	if len(tok) < 2 || tok[0] != '"' {
		return false
	}
	body := tok[1 : len(tok)-1]
	if bytes.IndexByte(body, '\\') >= 0 || !utf8.Valid(body) {
		return false
	}
	d, err := time.ParseDuration(string(body))
	if err != nil || d <= 0 {
		return false
	}
	v.SetInt(int64(d))
	return true
}

// foldName appends to dst the name folded as encoding/json folds field names to
// match keys in any case: ASCII letters upper-cased, other runes to the smallest
// rune of their simple case folding orbit.
func foldName(dst, name []byte) []byte {
	for i := 0; i < len(name); {
		if c := name[i]; c < utf8.RuneSelf {
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			dst = append(dst, c)
			i++
			continue
		}
		r, n := utf8.DecodeRune(name[i:])
		for {
			r2 := unicode.SimpleFold(r)
			if r2 <= r {
				r = r2
				break
			}
			r = r2
		}
		dst = utf8.AppendRune(dst, r)
		i += n
	}
	return dst
}

// delegate decodes the value from start to the cursor with encoding/json, for the
// kinds of value that are rare in params (interfaces, text decoders).
func (s *scanner) delegate(start int, p *plan, v reflect.Value) error {
	if err := json.Unmarshal(s.data[start:s.i], v.Addr().Interface()); err != nil {
		return s.fail(err.Error())
	}
	return nil
}

// failSkip checks the syntax of the value at the cursor, then fails with reason:
// JSON that does not parse is reported as such, as encoding/json would.
func (s *scanner) failSkip(reason string) error {
	if err := s.skip(); err != nil {
		return err
	}
	return s.fail(reason)
}

// object decodes an object into v: a struct's fields, or a map's entries.
func (s *scanner) object(p *plan, v reflect.Value) error {
	isStruct := p.class == classStruct
	if !isStruct && v.IsNil() {
		v.Set(reflect.MakeMap(p.t))
	}
	s.path = append(s.path, segment{field: isStruct})
	top := len(s.path) - 1
	var elem reflect.Value // a map's element, reused
	err := s.members(func(name []byte, esc bool) error {
		s.path[top] = segment{name: name, esc: esc, field: isStruct}
		key := name
		if esc || !utf8.Valid(name) {
			key = []byte(unquote(name)) // escapes decoded, bad UTF-8 replaced
		}
		if isStruct {
			f, ok := p.fields[string(key)]
			if !ok {
				if !s.lenient {
					return s.failSkip("unknown field")
				}
				var buf [32]byte
				if f, ok = p.folded[string(foldName(buf[:0], key))]; !ok {
					return s.skip() // a field this side does not know of
				}
			}
			fv, err := s.fieldValue(v, f.index)
			if err != nil {
				return err
			}
			return s.value(f.plan, fv)
		}
		kv, err := s.mapKey(p, key)
		if err != nil {
			return err
		}
		if !elem.IsValid() {
			elem = reflect.New(p.t.Elem()).Elem()
		} else {
			elem.SetZero()
		}
		if err := s.value(p.elem, elem); err != nil {
			return err
		}
		v.SetMapIndex(kv, elem)
		return nil
	})
	if err == nil {
		s.path = s.path[:top]
	}
	return err
}

// fieldValue is the field of struct v at index, making embedded pointers on the way.
func (s *scanner) fieldValue(v reflect.Value, index []int) (reflect.Value, error) {
	v = v.Field(index[0])
	for _, x := range index[1:] {
		if v.Kind() == reflect.Pointer {
			if v.IsNil() && !v.CanSet() {
				return reflect.Value{}, s.failSkip("cannot be decoded")
			}
			if v.IsNil() {
				v.Set(reflect.New(v.Type().Elem()))
			}
			v = v.Elem()
		}
		v = v.Field(x)
	}
	return v, nil
}

// mapKey is a map's key as its type, or an error when it cannot be one.
func (s *scanner) mapKey(p *plan, key []byte) (reflect.Value, error) {
	kt := p.t.Key()
	if !p.keyOK {
		return reflect.Value{}, s.failSkip("cannot be decoded")
	}
	kv := reflect.New(kt).Elem()
	switch {
	case kt.Kind() == reflect.String:
		kv.SetString(string(key))
	case p.key == reflect.String: // a text key
		if err := kv.Addr().Interface().(encoding.TextUnmarshaler).UnmarshalText(key); err != nil {
			return reflect.Value{}, s.failSkip(err.Error())
		}
	case p.key >= reflect.Uint:
		n, err := strconv.ParseUint(string(key), 10, p.bits)
		if err != nil {
			return reflect.Value{}, s.failSkip("key must be integer")
		}
		kv.SetUint(n)
	default:
		n, err := strconv.ParseInt(string(key), 10, p.bits)
		if err != nil {
			return reflect.Value{}, s.failSkip("key must be integer")
		}
		kv.SetInt(n)
	}
	return kv, nil
}

// array decodes an array into a slice or array v. A fixed array drops the
// elements past its length and zeroes those the JSON lacks, as encoding/json does.
func (s *scanner) array(p *plan, v reflect.Value) error {
	fixed := v.Kind() == reflect.Array
	if !fixed {
		v.SetLen(0)
	}
	s.path = append(s.path, segment{})
	top := len(s.path) - 1
	n := 0 // elements decoded
	err := s.elements(func(i int) error {
		s.path[top] = segment{index: i}
		switch {
		case fixed && i >= v.Len():
			return s.skip()
		case !fixed && i >= v.Cap():
			v.Grow(1)
		}
		if !fixed {
			// An element within the old length keeps what it held, as in
			// encoding/json: a repeated key decodes into it (a null leaves it, an
			// object merges into it).
			v.SetLen(i + 1)
		}
		ev := v.Index(i)
		n = i + 1
		return s.value(p.elem, ev)
	})
	switch {
	case fixed:
		for i := n; i < v.Len(); i++ {
			v.Index(i).SetZero()
		}
	case n == 0 && v.IsNil():
		v.Set(reflect.MakeSlice(v.Type(), 0, 0))
	}
	if err == nil {
		s.path = s.path[:top]
	}
	return err
}

// number decodes a number into an integer or float v.
func (s *scanner) number(p *plan, v reflect.Value) error {
	reason := "must be number"
	if p.class != classFloat {
		reason = "must be integer"
	}
	start := s.i
	integral, err := s.num()
	if err == errNotNumber {
		return s.failSkip(reason)
	}
	if err != nil {
		return err
	}
	tok := s.data[start:s.i]
	switch p.class {
	case classFloat:
		f, err := strconv.ParseFloat(string(tok), p.bits)
		if err != nil {
			return s.fail("number out of range")
		}
		v.SetFloat(f)
		return nil
	case classInt:
		if !integral {
			return s.fail(reason)
		}
		if n, ok := smallInt(tok); ok && fitsInt(n, p.bits) {
			v.SetInt(n)
			return nil
		}
		n, err := strconv.ParseInt(string(tok), 10, p.bits)
		if err != nil {
			return s.intError(err)
		}
		v.SetInt(n)
		return nil
	default: // classUint
		if !integral {
			return s.fail(reason)
		}
		if tok[0] == '-' {
			if _, err := strconv.ParseInt(string(tok), 10, 64); err == nil {
				return s.fail("must not be negative")
			}
		}
		if n, ok := smallInt(tok); ok && n >= 0 && fitsInt(n, p.bits+1) {
			v.SetUint(uint64(n))
			return nil
		}
		n, err := strconv.ParseUint(string(tok), 10, p.bits)
		if err != nil {
			return s.intError(err)
		}
		v.SetUint(n)
		return nil
	}
}

func (s *scanner) intError(err error) error {
	if errors.Is(err, strconv.ErrRange) {
		return s.fail("integer out of range")
	}
	return s.fail("must be integer")
}

// smallInt parses an integer token of at most 18 digits without allocating.
func smallInt(tok []byte) (int64, bool) {
	neg := tok[0] == '-'
	if neg {
		tok = tok[1:]
	}
	if len(tok) == 0 || len(tok) > 18 {
		return 0, false
	}
	var v int64
	for _, c := range tok {
		v = v*10 + int64(c-'0')
	}
	if neg {
		v = -v
	}
	return v, true
}

// fitsInt reports whether v fits a signed integer of the given bits (bits 65 for
// uint64 counts as 64 here: every 18-digit value fits).
func fitsInt(v int64, bits int) bool {
	if bits >= 64 {
		return true
	}
	limit := int64(1) << (bits - 1)
	return v >= -limit && v < limit
}
