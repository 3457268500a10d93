package rpc

import (
	"bytes"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
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
		return &Error{Code: CodeInvalidParams, Message: "invalid params: params must be an object", Data: &ErrorData{Reason: "params must be an object"}}
	}
	return d.Strict(raw, v, "")
}

// Strict decodes raw into v, as DecodeStrict.
//
// The check is one pass over the bytes, guided by a plan of v's type: it checks the
// syntax, every key against the fields of its struct and every value against its
// field's type, and builds a field's path only for an error. encoding/json then
// decodes what passed.
func (d *Decoder) Strict(raw json.RawMessage, v any, path string) error {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return fmt.Errorf("decode params: need a non-nil pointer, got %T", v)
	}
	s := scanner{data: raw, root: path}
	if err := s.check(d.plan(rv.Type().Elem())); err != nil {
		return err
	}
	if err := json.Unmarshal(raw, v); err != nil {
		// The check accepts only what the decoder accepts; this is a safety net.
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
	fields map[string]*plan // struct: fields by exact JSON name
	key    reflect.Kind     // map: the key's kind (String for text keys)
	keyOK  bool             // map: keys can decode
	bits   int              // numbers: size
	n      int              // array: length
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
			p.fields = map[string]*plan{}
			for name, ft := range structFields(t) {
				p.fields[name] = d.build(ft, building)
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

// structFields lists the fields encoding/json would decode into t, by exact name.
func structFields(t reflect.Type) map[string]reflect.Type {
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
	return fields
}

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

// scanner checks one JSON text against a plan.
type scanner struct {
	data  []byte
	i     int
	depth int
	root  string
	path  []segment
}

// check checks that data is one JSON value that fits p, and nothing more.
func (s *scanner) check(p *plan) error {
	err := s.value(p)
	if err == nil {
		s.ws()
		if s.i != len(s.data) {
			err = errSyntax
		}
	}
	if err == errSyntax {
		return InvalidParams(s.root, "must be valid JSON")
	}
	return err
}

// fail is a -32602 error for the value at the current path.
func (s *scanner) fail(reason string) error {
	return InvalidParams(s.pathString(), reason)
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
				path = joinField(path, name)
			} else {
				path = joinKey(path, name)
			}
		}
	}
	return path
}

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

// value checks the value at the cursor against p and moves past it.
func (s *scanner) value(p *plan) error {
	c := s.peek()
	if c == 0 {
		return errSyntax
	}
	if c == 'n' && p.class != classUnmarshaler {
		// null leaves any value as it is, as encoding/json does; a type that
		// decodes itself is asked.
		return s.literal("null")
	}
	switch p.class {
	case classAny:
		return s.skip()
	case classPointer:
		return s.value(p.elem)
	case classTime:
		start := s.i
		if c != '"' {
			if err := s.skip(); err != nil {
				return err
			}
			return s.fail("must be an RFC 3339 time")
		}
		if err := s.skip(); err != nil {
			return err
		}
		var tm time.Time
		if json.Unmarshal(s.data[start:s.i], &tm) != nil {
			return s.fail("must be an RFC 3339 time")
		}
		return nil
	case classUnmarshaler:
		start := s.i
		if err := s.skip(); err != nil {
			return err
		}
		if err := json.Unmarshal(s.data[start:s.i], reflect.New(p.t).Interface()); err != nil {
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
		if err := json.Unmarshal(s.data[start:s.i], reflect.New(p.t).Interface()); err != nil {
			return s.fail(err.Error())
		}
		return nil
	case classStruct:
		if c != '{' {
			return s.failSkip("must be object")
		}
		return s.object(p, true)
	case classMap:
		if c != '{' {
			return s.failSkip("must be object")
		}
		return s.object(p, false)
	case classBytes:
		if c == '"' {
			start := s.i
			if err := s.skip(); err != nil {
				return err
			}
			var b []byte
			if json.Unmarshal(s.data[start:s.i], &b) != nil {
				return s.fail("must be base64")
			}
			return nil
		}
		if c != '[' {
			return s.failSkip("must be array")
		}
		return s.array(p.elem, -1)
	case classSlice:
		if c != '[' {
			return s.failSkip("must be array")
		}
		return s.array(p.elem, -1)
	case classArray:
		if c != '[' {
			return s.failSkip("must be array")
		}
		return s.array(p.elem, p.n)
	case classString:
		if c != '"' {
			return s.failSkip("must be string")
		}
		_, err := s.str()
		return err
	case classBool:
		switch c {
		case 't':
			return s.literal("true")
		case 'f':
			return s.literal("false")
		}
		return s.failSkip("must be boolean")
	case classInt, classUint, classFloat:
		return s.number(p)
	}
	return s.failSkip("cannot be decoded")
}

// failSkip checks the syntax of the value at the cursor, then fails with reason:
// JSON that does not parse is reported as such, as encoding/json would.
func (s *scanner) failSkip(reason string) error {
	if err := s.skip(); err != nil {
		return err
	}
	return s.fail(reason)
}

func (s *scanner) literal(word string) error {
	if !bytes.HasPrefix(s.data[s.i:], []byte(word)) {
		return errSyntax
	}
	s.i += len(word)
	return nil
}

// object checks an object: a struct's when fields, else a map's.
func (s *scanner) object(p *plan, fields bool) error {
	if s.depth++; s.depth > maxDepth {
		return errSyntax
	}
	s.i++ // {
	if s.peek() == '}' {
		s.i++
		s.depth--
		return nil
	}
	s.path = append(s.path, segment{field: fields})
	top := len(s.path) - 1
	for {
		if s.peek() != '"' {
			return errSyntax
		}
		start := s.i
		esc, err := s.str()
		if err != nil {
			return err
		}
		name := s.data[start+1 : s.i-1]
		s.path[top] = segment{name: name, esc: esc, field: fields}
		if s.peek() != ':' {
			return errSyntax
		}
		s.i++
		if fields {
			key := name
			if esc {
				key = []byte(unquote(name))
			}
			fp, ok := p.fields[string(key)]
			if !ok {
				if err := s.skip(); err != nil {
					return err
				}
				return s.fail("unknown field")
			}
			if err := s.value(fp); err != nil {
				return err
			}
		} else {
			if err := s.mapKey(p, name, esc); err != nil {
				return err
			}
			if err := s.value(p.elem); err != nil {
				return err
			}
		}
		switch s.peek() {
		case ',':
			s.i++
		case '}':
			s.i++
			s.path = s.path[:top]
			s.depth--
			return nil
		default:
			return errSyntax
		}
	}
}

// mapKey checks that a key can decode into the map's key type.
func (s *scanner) mapKey(p *plan, name []byte, esc bool) error {
	if !p.keyOK {
		if err := s.skip(); err != nil {
			return err
		}
		return s.fail("cannot be decoded")
	}
	if p.key == reflect.String {
		return nil
	}
	key := string(name)
	if esc {
		key = unquote(name)
	}
	var err error
	if p.key >= reflect.Uint {
		_, err = strconv.ParseUint(key, 10, p.bits)
	} else {
		_, err = strconv.ParseInt(key, 10, p.bits)
	}
	if err != nil {
		if err := s.skip(); err != nil {
			return err
		}
		return s.fail("key must be integer")
	}
	return nil
}

// array checks an array whose elements fit elem; a fixed array (n >= 0) drops the
// elements past its length, as encoding/json does.
func (s *scanner) array(elem *plan, n int) error {
	if s.depth++; s.depth > maxDepth {
		return errSyntax
	}
	s.i++ // [
	if s.peek() == ']' {
		s.i++
		s.depth--
		return nil
	}
	s.path = append(s.path, segment{})
	top := len(s.path) - 1
	for i := 0; ; i++ {
		s.path[top] = segment{index: i}
		var err error
		if n >= 0 && i >= n {
			err = s.skip()
		} else {
			err = s.value(elem)
		}
		if err != nil {
			return err
		}
		switch s.peek() {
		case ',':
			s.i++
		case ']':
			s.i++
			s.path = s.path[:top]
			s.depth--
			return nil
		default:
			return errSyntax
		}
	}
}

// number checks a number against an integer or float plan.
func (s *scanner) number(p *plan) error {
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
		if _, err := strconv.ParseFloat(string(tok), p.bits); err != nil {
			return s.fail("number out of range")
		}
		return nil
	case classInt:
		if !integral {
			return s.fail(reason)
		}
		if v, ok := smallInt(tok); ok && fitsInt(v, p.bits) {
			return nil
		}
		if _, err := strconv.ParseInt(string(tok), 10, p.bits); err != nil {
			return s.intError(err)
		}
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
		if v, ok := smallInt(tok); ok && v >= 0 && fitsInt(v, p.bits+1) {
			return nil
		}
		if _, err := strconv.ParseUint(string(tok), 10, p.bits); err != nil {
			return s.intError(err)
		}
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
		if s.depth++; s.depth > maxDepth {
			return errSyntax
		}
		s.i++
		if s.peek() == '}' {
			s.i++
			s.depth--
			return nil
		}
		for {
			if s.peek() != '"' {
				return errSyntax
			}
			if _, err := s.str(); err != nil {
				return err
			}
			if s.peek() != ':' {
				return errSyntax
			}
			s.i++
			if err := s.skip(); err != nil {
				return err
			}
			switch s.peek() {
			case ',':
				s.i++
			case '}':
				s.i++
				s.depth--
				return nil
			default:
				return errSyntax
			}
		}
	case '[':
		if s.depth++; s.depth > maxDepth {
			return errSyntax
		}
		s.i++
		if s.peek() == ']' {
			s.i++
			s.depth--
			return nil
		}
		for {
			if err := s.skip(); err != nil {
				return err
			}
			switch s.peek() {
			case ',':
				s.i++
			case ']':
				s.i++
				s.depth--
				return nil
			default:
				return errSyntax
			}
		}
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
