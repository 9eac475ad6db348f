package config

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// This file turns yaml.v3's errors into *Error values with a line, a key
// path and a reason a user can act on.

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// parserProblems are the messages of libyaml's parser (as opposed to its
// scanner). yaml.v3 reports their line 0-based, one too low, and leaves
// the line out when it is the first.
var parserProblems = []string{
	"did not find expected ',' or ']'",
	"did not find expected ',' or '}'",
	"did not find expected '-' indicator",
	"did not find expected <document start>",
	"did not find expected <stream-start>",
	"did not find expected key",
	"did not find expected node content",
	"found duplicate %TAG directive",
	"found duplicate %YAML directive",
	"found incompatible YAML document",
	"found undefined tag handle",
}

// readerProblems are the messages of libyaml's reader (bad encoding), which
// carry no line at all.
var readerProblems = []string{
	"control characters are not allowed",
	"expected low surrogate area",
	"incomplete UTF-16 character",
	"incomplete UTF-16 surrogate pair",
	"incomplete UTF-8 octet sequence",
	"invalid Unicode character",
	"invalid leading UTF-8 octet",
	"invalid length of a UTF-8 sequence",
	"invalid trailing UTF-8 octet",
	"unexpected low surrogate area",
}

var (
	unknownAnchor = regexp.MustCompile(`^unknown anchor '(.*)' referenced$`)
	selfAnchor    = regexp.MustCompile(`^anchor '(.*)' value contains itself$`)
)

// syntaxErr turns an error that stopped yaml.v3 into an *Error, correcting
// the line where yaml.v3 gets it wrong or leaves it out. parsing is true
// for errors of reading the text (syntax), false for errors of decoding it
// into a Config (aliases, merges).
func (p *parser) syntaxErr(err error, parsing bool) *Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	switch {
	case slices.Contains(parserProblems, msg):
		line++
	case slices.Contains(readerProblems, msg):
		line = badCharLine(p.data)
	case unknownAnchor.MatchString(msg):
		line = lineOfText(p.data, "*"+unknownAnchor.FindStringSubmatch(msg)[1])
	case msg == "map merge requires map or sequence of maps as the value":
		line = p.badMergeLine(p.body, 0)
	case selfAnchor.MatchString(msg):
		line = lineOfText(p.data, "&"+selfAnchor.FindStringSubmatch(msg)[1])
	case line == 0 && parsing:
		line = 1 // yaml.v3 leaves out line 1
	}
	return &Error{File: p.file, Line: line, Reason: msg}
}

// badMergeLine is the line of the first merge key ("<<") whose value is
// not a mapping or a list of mappings, 0 if none.
func (p *parser) badMergeLine(n *yaml.Node, depth int) int {
	if n == nil || depth > maxDepth {
		return 0
	}
	for i, c := range n.Content {
		if n.Kind == yaml.MappingNode && i%2 == 0 && i+1 < len(n.Content) && isMerge(c) {
			for _, src := range mergeSources(n.Content[i+1]) {
				if src = deref(src); src == nil || src.Kind != yaml.MappingNode {
					return c.Line
				}
			}
		}
		if line := p.badMergeLine(c, depth+1); line != 0 {
			return line
		}
	}
	return 0
}

// badCharLine is the line of the first byte YAML does not allow: invalid
// UTF-8 or a control character. 0 when there is none (UTF-16 input).
func badCharLine(data []byte) int {
	line := 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && size <= 1:
			return line
		case r == '\n':
			line++
		case r == '\t' || r == '\r' || r == 0x85:
		case r < 0x20 || (r >= 0x7f && r < 0xa0) || r == 0xfffe || r == 0xffff:
			return line
		}
		i += size
	}
	return 0
}

// lineOfText is the line where s first appears in data, 0 if nowhere.
func lineOfText(data []byte, s string) int {
	i := bytes.Index(data, []byte(s))
	if i < 0 {
		return 0
	}
	return bytes.Count(data[:i], []byte("\n")) + 1
}

var (
	fieldNotFound = regexp.MustCompile(`^field (.*) not found in type (\S+)$`)
	fieldSet      = regexp.MustCompile(`^field (.*) already set in type (\S+)$`)
	keyDefined    = regexp.MustCompile(`^mapping key (".*") already defined at line (\d+)$`)
	cannotDecode  = regexp.MustCompile("^cannot unmarshal (\\S+)(?: `(.*)`)? into (.+)$")
	gotScalar     = regexp.MustCompile(`got ("(?:[^"\\]|\\.)*")$`)
	gotKind       = regexp.MustCompile(`got (a mapping|a list)$`)
)

// typeErr reports a bad scalar the way yaml.v3 reports its own type
// errors, so that decoding goes on and every problem is reported at once.
// The reason must end in describe(n) so that addYAML can find the node.
func typeErr(n *yaml.Node, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", n.Line, msg)}}
}

// describe names what a node holds, for "got ..." in reasons.
func describe(n *yaml.Node) string {
	if n == nil {
		return "nothing"
	}
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return strconv.Quote(n.Value)
}

// candidate is a key/value pair or a list item that starts at some line.
type candidate struct {
	path     []string
	key, val *yaml.Node // key is nil for a list item
	isKey    bool       // val is a mapping key that is not text; path is its mapping's
}

// onLine lists, in document order, the pairs and list items whose key or
// value starts at line. Aliases are not followed: a problem inside an
// anchored value is reported where the anchor is written. The index of
// every line is built once, on the first call.
func (p *parser) onLine(line int) []candidate {
	if p.lines != nil {
		return p.lines[line]
	}
	p.lines = map[int][]candidate{}
	add := func(c candidate, lines ...int) {
		for i, l := range lines {
			if i == 0 || l != lines[0] {
				p.lines[l] = append(p.lines[l], c)
			}
		}
	}
	var walk func(n *yaml.Node, path []string, depth int)
	walk = func(n *yaml.Node, path []string, depth int) {
		if depth > maxDepth {
			return
		}
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				if k.Kind != yaml.ScalarNode {
					add(candidate{path, nil, k, true}, k.Line) // a key that is a list or mapping
				}
				kp := append(slices.Clone(path), k.Value)
				add(candidate{kp, k, v, false}, k.Line, v.Line)
				walk(v, kp, depth+1)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				ip := append(slices.Clone(path), index(i))
				add(candidate{ip, nil, c, false}, c.Line)
				walk(c, ip, depth+1)
			}
		}
	}
	if p.body != nil {
		walk(p.body, nil, 0)
	}
	return p.lines[line]
}

// pick returns the path of the nth candidate on line that matches, else
// of the deepest key on the line, else nil. n counts earlier errors of
// the same kind on the same line, so that two unknown "x" keys in one flow
// mapping get their own paths.
func (p *parser) pick(line int, seen string, match func(candidate) bool) []string {
	cands := p.onLine(line)
	nth := p.seen[seen]
	p.seen[seen]++
	for _, c := range cands {
		if match(c) {
			if nth == 0 {
				return c.path
			}
			nth--
		}
	}
	var best []string
	for _, c := range cands {
		if c.key != nil && c.key.Line == line && len(c.path) > len(best) {
			best = c.path
		}
	}
	return best
}

// addYAML records one of the per-field errors yaml.v3 collects
// ("line N: ..."), finding the key path from the line and the message.
func (p *parser) addYAML(msg string) {
	m := yamlLine.FindStringSubmatch(msg)
	if m == nil {
		p.record(&Error{File: p.file, Reason: msg})
		return
	}
	line, _ := strconv.Atoi(m[1])
	reason := m[2]
	seen := m[0]
	byKey := func(name string) func(candidate) bool {
		return func(c candidate) bool { return c.key != nil && c.key.Line == line && c.key.Value == name }
	}
	// byValue matches the value yaml.v3 complains about; into, when known,
	// is the Go type it was decoded into, which tells a mapping from the
	// mapping that holds it when both start on the line.
	byValue := func(kind yaml.Kind, tag, value, into string) func(candidate) bool {
		return func(c candidate) bool {
			v := c.val
			if v.Line != line || v.Kind != kind || (tag != "" && v.ShortTag() != tag) {
				return false
			}
			if t := typeAt(c.path); into != "" && t != nil && !c.isKey && strings.TrimPrefix(t.String(), "*") != strings.TrimPrefix(into, "*") {
				return false
			}
			if kind != yaml.ScalarNode {
				return true
			}
			if v.Value == value {
				return true
			}
			// yaml.v3 shortens values longer than 10 bytes to 7 and "...".
			short, ok := strings.CutSuffix(value, "...")
			return ok && len(v.Value) > 10 && strings.HasPrefix(v.Value, short)
		}
	}
	var path []string
	switch {
	case fieldNotFound.MatchString(reason):
		f := fieldNotFound.FindStringSubmatch(reason)
		path = p.pick(line, seen, byKey(f[1]))
		reason = fmt.Sprintf("unknown key %q", f[1])
		if keys := keysOf(f[2]); keys != nil {
			reason += didYouMean(f[1], keys) + " (valid keys: " + strings.Join(keys, ", ") + ")"
		}
	case fieldSet.MatchString(reason):
		f := fieldSet.FindStringSubmatch(reason)
		path = p.pick(line, seen, byKey(f[1]))
		reason = fmt.Sprintf("key %q is set twice", f[1])
	case keyDefined.MatchString(reason):
		f := keyDefined.FindStringSubmatch(reason)
		name, err := strconv.Unquote(f[1])
		if err != nil {
			name = f[1]
		}
		path = p.pick(line, seen, byKey(name))
		reason = fmt.Sprintf("duplicate key %q (first at line %s)", name, f[2])
	case cannotDecode.MatchString(reason):
		f := cannotDecode.FindStringSubmatch(reason)
		tag, value, into := f[1], f[2], f[3]
		kind := yaml.ScalarNode
		switch tag {
		case "!!map":
			kind = yaml.MappingNode
		case "!!seq":
			kind = yaml.SequenceNode
		}
		path = p.pick(line, seen, byValue(kind, tag, value, into))
		reason = fmt.Sprintf("want %s, got %s", typeName(into), valueName(tag, value))
	case gotScalar.MatchString(reason):
		value, err := strconv.Unquote(gotScalar.FindStringSubmatch(reason)[1])
		if err != nil {
			value = ""
		}
		path = p.pick(line, seen, byValue(yaml.ScalarNode, "", value, ""))
	case gotKind.MatchString(reason):
		kind := yaml.MappingNode
		if gotKind.FindStringSubmatch(reason)[1] == "a list" {
			kind = yaml.SequenceNode
		}
		path = p.pick(line, seen, byValue(kind, "", "", ""))
	default:
		path = p.pick(line, seen, func(candidate) bool { return false })
	}
	if len(path) > 0 {
		line = p.lineOf(path) // the key's line, like every other problem
	}
	p.record(&Error{File: p.file, Line: line, Path: joinPath(path), Reason: reason})
}

// typeName says in words what a Go type expects.
func typeName(t string) string {
	switch {
	case strings.HasPrefix(t, "int") || strings.HasPrefix(t, "uint"):
		return "an integer"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case t == "bool":
		return "true or false"
	case t == "string":
		return "a string"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	default:
		return "a mapping" // a map or one of our structs
	}
}

// valueName says in words what a YAML value is.
func valueName(tag, value string) string {
	switch tag {
	case "!!map":
		return "a mapping"
	case "!!seq":
		return "a list"
	case "!!str":
		return fmt.Sprintf("text %q", value)
	case "!!int", "!!float":
		return "number " + value
	case "!!bool":
		return value
	case "!!null":
		return "nothing"
	}
	return fmt.Sprintf("%s %q", tag, value)
}
