package glance

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Glance's schema errors are jsonschema's str(ValidationError), which prints
// the schema and the instance with Python's pprint.pformat(x, width=72).
// This is pformat for JSON values, as Python 3.11's PrettyPrinter writes
// them: dict keys sorted, a container broken over lines when its repr does
// not fit, long strings split at whitespace into adjacent literals.
//
// Python computes the repr of every container again at every level it
// descends; here each node's repr length is computed once, so the cost is
// linear in the size of the value whatever its depth.

// pnode is a JSON value with what pformat needs to know about it.
type pnode struct {
	value    any      // a scalar or string; nil for a container
	dict     bool     // an object: keys are its sorted keys' reprs
	list     bool     // an array
	keys     []string // for a dict: the repr of each key, in sorted order
	children []*pnode
	width    int // the length of repr(value), in code points
}

func newPnode(v any) *pnode {
	switch v := v.(type) {
	case object:
		members := slices.Clone(v)
		slices.SortFunc(members, func(a, b member) int { return strings.Compare(a.key, b.key) })
		n := &pnode{dict: true, width: 2}
		for i, m := range members {
			k := pyReprString(m.key)
			c := newPnode(m.value)
			n.keys = append(n.keys, k)
			n.children = append(n.children, c)
			n.width += utf8.RuneCountInString(k) + 2 + c.width
			if i > 0 {
				n.width += 2
			}
		}
		return n
	case []any:
		n := &pnode{list: true, width: 2}
		for i, x := range v {
			c := newPnode(x)
			n.children = append(n.children, c)
			n.width += c.width
			if i > 0 {
				n.width += 2
			}
		}
		return n
	}
	return &pnode{value: v, width: utf8.RuneCountInString(pyRepr(v))}
}

// writeRepr writes repr(value) with dict keys sorted: pprint's _safe_repr.
func (n *pnode) writeRepr(b *strings.Builder) {
	switch {
	case n.dict:
		b.WriteByte('{')
		for i, c := range n.children {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(n.keys[i])
			b.WriteString(": ")
			c.writeRepr(b)
		}
		b.WriteByte('}')
	case n.list:
		b.WriteByte('[')
		for i, c := range n.children {
			if i > 0 {
				b.WriteString(", ")
			}
			c.writeRepr(b)
		}
		b.WriteByte(']')
	default:
		writeRepr(b, n.value)
	}
}

// pformat is pprint.pformat(v, width=width).
func pformat(v any, width int) string {
	var b strings.Builder
	p := printer{b: &b, width: width}
	p.format(newPnode(v), 0, 0, 0)
	return b.String()
}

type printer struct {
	b     *strings.Builder
	width int
}

// format is PrettyPrinter._format.
func (p *printer) format(n *pnode, indent, allowance, level int) {
	if n.width <= p.width-indent-allowance {
		n.writeRepr(p.b)
		return
	}
	switch s, isString := n.value.(string); {
	case n.dict:
		p.b.WriteByte('{')
		if len(n.children) > 0 {
			p.dictItems(n, indent, allowance+1, level+1)
		}
		p.b.WriteByte('}')
	case n.list:
		p.b.WriteByte('[')
		p.items(n.children, indent, allowance+1, level+1)
		p.b.WriteByte(']')
	case isString:
		p.str(s, indent, allowance, level+1)
	default:
		n.writeRepr(p.b)
	}
}

// dictItems is PrettyPrinter._format_dict_items.
func (p *printer) dictItems(n *pnode, indent, allowance, level int) {
	indent++
	for i, c := range n.children {
		last := i == len(n.children)-1
		p.b.WriteString(n.keys[i])
		p.b.WriteString(": ")
		a := 1
		if last {
			a = allowance
		}
		p.format(c, indent+utf8.RuneCountInString(n.keys[i])+2, a, level)
		if !last {
			p.b.WriteString(",\n" + strings.Repeat(" ", indent))
		}
	}
}

// items is PrettyPrinter._format_items, not compact.
func (p *printer) items(children []*pnode, indent, allowance, level int) {
	indent++
	for i, c := range children {
		if i > 0 {
			p.b.WriteString(",\n" + strings.Repeat(" ", indent))
		}
		a := 1
		if i == len(children)-1 {
			a = allowance
		}
		p.format(c, indent, a, level)
	}
}

// str is PrettyPrinter._pprint_str: the string as adjacent literals, one a
// line, split at line ends and then between words.
func (p *printer) str(s string, indent, allowance, level int) {
	if s == "" {
		p.b.WriteString("''")
		return
	}
	if level == 1 {
		indent++
		allowance++
	}
	reprLen := func(s string) int { return utf8.RuneCountInString(pyReprString(s)) }
	var chunks []string
	lines := pySplitLines(s)
	maxWidth := p.width - indent
	maxWidth1 := maxWidth
	for i, line := range lines {
		lastLine := i == len(lines)-1
		if lastLine {
			maxWidth1 -= allowance
		}
		if reprLen(line) <= maxWidth1 {
			chunks = append(chunks, pyReprString(line))
			continue
		}
		parts := pyWords(line)
		maxWidth2 := maxWidth
		current := ""
		for j, part := range parts {
			candidate := current + part
			if j == len(parts)-1 && lastLine {
				maxWidth2 -= allowance
			}
			if reprLen(candidate) > maxWidth2 {
				if current != "" {
					chunks = append(chunks, pyReprString(current))
				}
				current = part
			} else {
				current = candidate
			}
		}
		if current != "" {
			chunks = append(chunks, pyReprString(current))
		}
	}
	if len(chunks) == 1 {
		p.b.WriteString(chunks[0])
		return
	}
	if level == 1 {
		p.b.WriteByte('(')
	}
	for i, c := range chunks {
		if i > 0 {
			p.b.WriteString("\n" + strings.Repeat(" ", indent))
		}
		p.b.WriteString(c)
	}
	if level == 1 {
		p.b.WriteByte(')')
	}
}

// pySplitLines is Python's str.splitlines(keepends=True).
func pySplitLines(s string) []string {
	var lines []string
	start := 0
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		end := -1
		switch r {
		case '\r':
			end = i + size
			if end < len(s) && s[end] == '\n' {
				end++
			}
		case '\n', '\v', '\f', 0x1c, 0x1d, 0x1e, 0x85, 0x2028, 0x2029:
			end = i + size
		}
		if end < 0 {
			i += size
			continue
		}
		lines = append(lines, s[start:end])
		start, i = end, end
	}
	if start < len(s) {
		lines = append(lines, s[start:])
	}
	return lines
}

// pyWords is re.findall(r'\S*\s*', line) without its final empty match:
// each word with the whitespace that follows it.
func pyWords(line string) []string {
	var parts []string
	for i := 0; i < len(line); {
		j := i
		for j < len(line) {
			r, size := utf8.DecodeRuneInString(line[j:])
			if pySpace(r) {
				break
			}
			j += size
		}
		for j < len(line) {
			r, size := utf8.DecodeRuneInString(line[j:])
			if !pySpace(r) {
				break
			}
			j += size
		}
		parts = append(parts, line[i:j])
		i = j
	}
	return parts
}

// pySpace is Python's str.isspace() of one character.
func pySpace(r rune) bool { return unicode.IsSpace(r) || (r >= 0x1c && r <= 0x1f) }

// pyRepr is Python's repr() of a JSON value, as jsonschema puts values in
// its messages (dict keys in their order).
func pyRepr(v any) string {
	var b strings.Builder
	writeRepr(&b, v)
	return b.String()
}

func writeRepr(b *strings.Builder, v any) {
	switch v := v.(type) {
	case nil:
		b.WriteString("None")
	case bool:
		if v {
			b.WriteString("True")
		} else {
			b.WriteString("False")
		}
	case string:
		b.WriteString(pyReprString(v))
	case json.Number:
		b.WriteString(pyNumber(v))
	case object:
		b.WriteByte('{')
		for i, m := range v {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(pyReprString(m.key))
			b.WriteString(": ")
			writeRepr(b, m.value)
		}
		b.WriteByte('}')
	case []any:
		b.WriteByte('[')
		for i, x := range v {
			if i > 0 {
				b.WriteString(", ")
			}
			writeRepr(b, x)
		}
		b.WriteByte(']')
	default:
		fmt.Fprint(b, v)
	}
}

// pyReprString is Python's repr() of a str: single quotes unless the string
// has a single quote and no double one; what is not printable escaped.
func pyReprString(s string) string {
	quote := byte('\'')
	if strings.IndexByte(s, '\'') >= 0 && strings.IndexByte(s, '"') < 0 {
		quote = '"'
	}
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte(quote)
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case r == rune(quote):
			b.WriteByte('\\')
			b.WriteByte(quote)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x7f && r >= 0x20:
			b.WriteRune(r)
		case !unicode.IsPrint(r):
			writePyEscape(&b, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte(quote)
	return b.String()
}

// writePyEscape writes \xhh, \uhhhh or \Uhhhhhhhh, as Python's repr does.
func writePyEscape(b *strings.Builder, r rune) {
	const hex = "0123456789abcdef"
	var digits int
	switch {
	case r <= 0xff:
		b.WriteString(`\x`)
		digits = 2
	case r <= 0xffff:
		b.WriteString(`\u`)
		digits = 4
	default:
		b.WriteString(`\U`)
		digits = 8
	}
	for i := digits - 1; i >= 0; i-- {
		b.WriteByte(hex[(r>>(4*i))&0xf])
	}
}
