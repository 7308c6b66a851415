package glance

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Glance writes JSON with Python's json.dumps: ", " and ": " separators,
// keys in insertion order, and (for task views) raw UTF-8. Clients and the
// compatibility diff see those bytes, so the shim writes them too.

// object is a JSON object whose keys keep their order.
type object []member

type member struct {
	key   string
	value any
}

// rawJSON is JSON text, such as the input a client posted, re-written in
// Python's style with its key order kept.
type rawJSON []byte

// encodePy writes v as Python's json.dumps(v, ensure_ascii=asciiOnly) would.
func encodePy(v any, asciiOnly bool) []byte {
	var b bytes.Buffer
	writePy(&b, v, asciiOnly)
	return b.Bytes()
}

func writePy(b *bytes.Buffer, v any, asciiOnly bool) {
	switch v := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(v))
	case string:
		writePyString(b, v, asciiOnly)
	case int:
		b.WriteString(strconv.Itoa(v))
	case int64:
		b.WriteString(strconv.FormatInt(v, 10))
	case object:
		b.WriteByte('{')
		for i, m := range v {
			if i > 0 {
				b.WriteString(", ")
			}
			writePyString(b, m.key, asciiOnly)
			b.WriteString(": ")
			writePy(b, m.value, asciiOnly)
		}
		b.WriteByte('}')
	case []any:
		b.WriteByte('[')
		for i, x := range v {
			if i > 0 {
				b.WriteString(", ")
			}
			writePy(b, x, asciiOnly)
		}
		b.WriteByte(']')
	case rawJSON:
		parsed, err := parseOrdered(v)
		if err != nil {
			b.WriteString("null")
			return
		}
		writePy(b, parsed, asciiOnly)
	case json.Number:
		b.WriteString(pyNumber(v))
	default:
		panic(fmt.Sprintf("glance: cannot encode %T", v))
	}
}

func writePyString(b *bytes.Buffer, s string, asciiOnly bool) {
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r < 0x20 || (asciiOnly && r > 0x7e):
			if r > 0xffff {
				r1, r2 := utf16Pair(r)
				fmt.Fprintf(b, `\u%04x\u%04x`, r1, r2)
			} else {
				fmt.Fprintf(b, `\u%04x`, r)
			}
		case r == utf8.RuneError:
			b.WriteString(`\ufffd`)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
}

func utf16Pair(r rune) (rune, rune) {
	r -= 0x10000
	return 0xd800 + (r>>10)&0x3ff, 0xdc00 + r&0x3ff
}

// pyNumber writes a JSON number as Python re-serialises it: integers as
// they are, floats in Python's repr.
func pyNumber(n json.Number) string {
	s := string(n)
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return strconv.FormatInt(i, 10)
		}
		return s
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return s
	}
	// Python's float repr: positional between 1e-4 and 1e16, else exponent.
	if a := math.Abs(f); a == 0 || (a >= 1e-4 && a < 1e16) {
		out := strconv.FormatFloat(f, 'f', -1, 64)
		if !strings.Contains(out, ".") {
			out += ".0"
		}
		return out
	}
	return strconv.FormatFloat(f, 'e', -1, 64)
}

// maxDepth is how deeply the parser lets arrays and objects nest. Glance
// (Python's json, under eventlet) fails with a RecursionError, a 500, from
// about 894 levels; nothing real comes near either.
const maxDepth = 1000

// errTooDeep is a body nested deeper than maxDepth.
var errTooDeep = errors.New("JSON nested deeper than 1000 levels")

// parseOrdered decodes JSON keeping the order of object keys.
func parseOrdered(data []byte) (any, error) {
	return parseOrderedFrom(bytes.NewReader(data))
}

// parseOrderedFrom decodes one JSON value from r keeping the order of
// object keys. It reads r as it goes and stops at the first level past
// maxDepth, so a hostile body costs neither a deep stack nor a read of its
// rest; objects are built in linear time whatever their size.
func parseOrderedFrom(r io.Reader) (any, error) {
	dec := json.NewDecoder(r)
	dec.UseNumber()
	v, err := parseValue(dec, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("trailing data after JSON value")
	}
	return v, nil
}

func parseValue(dec *json.Decoder, depth int) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	delim, ok := tok.(json.Delim)
	if !ok {
		return tok, nil
	}
	if depth++; depth > maxDepth {
		return nil, errTooDeep
	}
	switch delim {
	case '{':
		var b objectBuilder
		for dec.More() {
			k, err := dec.Token()
			if err != nil {
				return nil, err
			}
			v, err := parseValue(dec, depth)
			if err != nil {
				return nil, err
			}
			b.set(k.(string), v)
		}
		_, err := dec.Token()
		return b.obj, err
	case '[':
		arr := []any{}
		for dec.More() {
			v, err := parseValue(dec, depth)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		_, err := dec.Token()
		return arr, err
	}
	return nil, fmt.Errorf("unexpected %v", delim)
}

// objectBuilder builds an object whose repeated keys keep their first place
// and their last value, as a Python dict does, in linear time: past a few
// keys it finds a repeated key through an index rather than a scan.
type objectBuilder struct {
	obj   object
	index map[string]int
}

// indexFrom is the size from which an object under construction is indexed.
const indexFrom = 16

func (b *objectBuilder) set(key string, v any) {
	if b.obj == nil {
		b.obj = object{}
	}
	if b.index == nil && len(b.obj) < indexFrom {
		b.obj = b.obj.set(key, v)
		if len(b.obj) == indexFrom {
			b.index = make(map[string]int, 2*indexFrom)
			for i, m := range b.obj {
				b.index[m.key] = i
			}
		}
		return
	}
	if i, ok := b.index[key]; ok {
		b.obj[i].value = v
		return
	}
	b.index[key] = len(b.obj)
	b.obj = append(b.obj, member{key, v})
}

// set sets a key of a small object: a repeated key keeps its first place.
func (o object) set(key string, v any) object {
	for i := range o {
		if o[i].key == key {
			o[i].value = v
			return o
		}
	}
	return append(o, member{key, v})
}

func (o object) get(key string) (any, bool) {
	for _, m := range o {
		if m.key == key {
			return m.value, true
		}
	}
	return nil, false
}
