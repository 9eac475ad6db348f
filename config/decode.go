package config

import (
	"encoding"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The decoder walks the YAML node tree alongside the Go type it fills, so
// that every problem is found with its key path and line at once, in our
// words. Scalars are converted by the YAML library (node.Decode), which
// keeps its reading of numbers, booleans and tags.

// maxWork bounds the nodes one Parse visits: aliases and merge keys can
// make a short file stand for a huge one ("billion laughs").
const maxWork = 200_000

// maxDepth bounds walks that no Go type bounds (see noteTree).
const maxDepth = 64

var (
	concurrencyType     = reflect.TypeFor[Concurrency]()
	adaptiveType        = reflect.TypeFor[AdaptiveConcurrency]()
	unmarshalerType     = reflect.TypeFor[yaml.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// decode sets v from the node n at path. A problem is recorded and
// decoding goes on. A null leaves v as it is (zero, or a nil pointer), so
// that the default applies.
func (p *parser) decode(n *yaml.Node, v reflect.Value, path []string) {
	n = deref(n)
	if isNull(n) || !p.step(n.Line) {
		return
	}
	t := v.Type()
	if t == concurrencyType {
		p.decodeConcurrency(n, v.Addr().Interface().(*Concurrency), path)
		return
	}
	if pt := reflect.PointerTo(t); pt.Implements(unmarshalerType) || pt.Implements(textUnmarshalerType) {
		// A type that decodes itself (Duration, Size, Rate) is left to the
		// library, which calls its method.
		if err := n.Decode(v.Addr().Interface()); err != nil {
			p.unmarshalErr(path, err)
			return
		}
		p.noteTree(n, path, 0)
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(t.Elem()))
		}
		p.decode(n, v.Elem(), path)
	case reflect.Struct, reflect.Map:
		if n.Kind != yaml.MappingNode {
			p.errorf(path, "want a mapping, got %s", got(n))
			return
		}
		if t.Kind() == reflect.Map && v.IsNil() {
			v.Set(reflect.MakeMap(t))
		}
		p.pairs(n, path, map[string]bool{}, func(k, val *yaml.Node, kp []string) {
			if t.Kind() == reflect.Map {
				e := reflect.New(t.Elem()).Elem()
				p.decode(val, e, kp)
				v.SetMapIndex(reflect.ValueOf(k.Value).Convert(t.Key()), e)
			} else if f, ok := fieldByKey(t, k.Value); ok {
				p.decode(val, v.FieldByIndex(f.Index), kp)
			} else {
				p.add(k.Line, kp, unknownKey(k.Value, t))
			}
		})
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			p.errorf(path, "want a list, got %s", got(n))
			return
		}
		// Null items stay as zero values, so that validation sees them and
		// the indexes in messages are the file's.
		s := reflect.MakeSlice(t, len(n.Content), len(n.Content))
		for i, c := range n.Content {
			ip := append(slices.Clone(path), index(i))
			p.note(ip, c.Line, !isNull(c))
			p.decode(c, s.Index(i), ip)
		}
		v.Set(s)
	default:
		want := typeName(t)
		switch {
		case n.Kind != yaml.ScalarNode:
			p.errorf(path, "want %s, got %s", want, got(n))
		case want == "an integer" && n.ShortTag() == "!!float":
			// yaml.v3 would truncate it: max_concurrency: 1.5 would be 1.
			p.errorf(path, "want an integer, got %s", n.Value)
		case n.Decode(v.Addr().Interface()) != nil:
			p.errorf(path, "want %s, got %s", want, got(n))
		}
	}
}

// pairs calls f with every key of the mapping n, its value and its path:
// first the keys n writes, in order, then those its merge keys ("<<")
// bring in, earlier sources first, leaving out keys already taken (a key
// written in a mapping wins over a merged one, as YAML says).
func (p *parser) pairs(n *yaml.Node, path []string, taken map[string]bool, f func(k, v *yaml.Node, path []string)) {
	here := map[string]int{} // key → line, for duplicates
	var merges []*yaml.Node  // merge key, value, ...
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), n.Content[i+1]
		if !p.step(k.Line) {
			return
		}
		kp := append(slices.Clone(path), k.Value)
		first, dup := here[k.Value]
		switch {
		// Decode catches a key whose explicit tag does not fit (!!int a).
		case k.Kind != yaml.ScalarNode || (k.Value == "" && isNull(k)) || k.Decode(new(string)) != nil:
			p.add(n.Content[i].Line, path, "a key must be text, got "+got(k))
			continue
		case isMerge(k):
			merges = append(merges, k, v)
			continue
		case dup:
			p.add(k.Line, kp, fmt.Sprintf("duplicate key %q (first at line %d)", k.Value, first))
			continue
		case !taken[k.Value]:
			taken[k.Value] = true
			p.note(kp, k.Line, !isNull(v))
			f(k, v, kp)
		}
		here[k.Value] = k.Line
	}
	for i := 0; i < len(merges); i += 2 {
		k, v := merges[i], deref(merges[i+1])
		srcs := []*yaml.Node{merges[i+1]}
		if v.Kind == yaml.SequenceNode {
			srcs = v.Content
		}
		for _, src := range srcs {
			switch m := deref(src); {
			case m.Kind != yaml.MappingNode:
				p.add(k.Line, path, "a merge key (<<) takes a mapping or a list of mappings, got "+got(m))
			case p.merging[m]:
				p.add(k.Line, path, fmt.Sprintf("anchor %q merges itself", src.Value))
			default:
				if p.merging == nil {
					p.merging = map[*yaml.Node]bool{}
				}
				p.merging[m] = true
				p.pairs(m, path, taken, f)
				delete(p.merging, m)
			}
		}
	}
}

// noteTree records the keys and items under n, which a type that decodes
// itself took in, so that has and lineOf know them like any other.
func (p *parser) noteTree(n *yaml.Node, path []string, depth int) {
	n = deref(n)
	if depth > maxDepth || !p.step(n.Line) {
		return
	}
	for i, c := range n.Content {
		var kp []string
		switch {
		case n.Kind == yaml.SequenceNode:
			kp = append(slices.Clone(path), index(i))
			p.note(kp, c.Line, !isNull(c))
		case n.Kind == yaml.MappingNode && i%2 == 1:
			kp = append(slices.Clone(path), deref(n.Content[i-1]).Value)
			p.note(kp, n.Content[i-1].Line, !isNull(c))
		default:
			continue
		}
		p.noteTree(c, kp, depth+1)
	}
}

// step counts a visited node and reports whether there is work left; the
// first time there is not, it records why.
func (p *parser) step(line int) bool {
	p.work++
	if p.work == maxWork {
		p.add(line, nil, "the document expands to too many values (aliases and merge keys)")
	}
	return p.work < maxWork
}

// unmarshalErr records the error of decoding a type that decodes itself:
// a *yaml.TypeError (see typeErr) holds one reason a line, each starting
// "line N: ", which the key path replaces; any other error is the reason.
func (p *parser) unmarshalErr(path []string, err error) {
	te, ok := err.(*yaml.TypeError)
	if !ok {
		p.errorf(path, "%v", err)
		return
	}
	for _, msg := range te.Errors {
		if m := yamlLine.FindStringSubmatch(msg); m != nil {
			msg = m[2]
		}
		p.errorf(path, "%s", msg)
	}
}

// deref follows an alias to the node it names. YAML has no alias of an
// alias, and the parser refuses an alias to an anchor it has not seen.
func deref(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode {
		return n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	n = deref(n)
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// isMerge reports a "<<" merge key.
func isMerge(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge"
}

// fieldByKey finds the struct field decoded from a YAML key.
func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name == key && f.IsExported() {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// unknownKey is the reason for a key that is not a field of t.
func unknownKey(key string, t reflect.Type) string {
	var keys []string
	for i := range t.NumField() {
		if k, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); k != "" && k != "-" && t.Field(i).IsExported() {
			keys = append(keys, k)
		}
	}
	return fmt.Sprintf("unknown key %q", key) + didYouMean(key, keys) + " (valid keys: " + strings.Join(keys, ", ") + ")"
}

// typeName says in words what a scalar Go type expects.
func typeName(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	}
	return "a value"
}

// got says in words what a node holds, for "want X, got Y". A value
// longer than 10 bytes is cut to 7 (as yaml.v3 does), which keeps most of
// a secret written in the wrong place out of the message.
func got(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	v := n.Value
	if len(v) > 10 {
		v = v[:7] + "..."
	}
	switch tag := n.ShortTag(); {
	case n.Style&yaml.TaggedStyle != 0:
		return fmt.Sprintf("%s %q", tag, v) // what it was written as: !!int "echo"
	case tag == "!!str":
		return fmt.Sprintf("text %q", v)
	case tag == "!!int" || tag == "!!float":
		return "number " + v
	case tag == "!!bool":
		return v
	case tag == "!!null":
		return "nothing"
	default:
		return fmt.Sprintf("%s %q", tag, v)
	}
}

// describe names what a node holds, for "got ..." in reasons.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	return strconv.Quote(n.Value)
}

// joinPath renders a key path: keys joined with dots, list indexes in
// brackets (routes.code.generate.backends[1]), an empty key as "".
func joinPath(path []string) string {
	var b strings.Builder
	for i, seg := range path {
		if i > 0 && !strings.HasPrefix(seg, "[") {
			b.WriteByte('.')
		}
		if seg == "" {
			seg = `""`
		}
		b.WriteString(seg)
	}
	return b.String()
}

// index is the path segment of a list item.
func index(i int) string { return "[" + strconv.Itoa(i) + "]" }

// decodeConcurrency reads max_concurrency: an integer, "adaptive" or
// {adaptive: {min, max, initial}}. It is walked here rather than by an
// UnmarshalYAML method so that the keys under adaptive get their paths,
// lines and unknown-key messages like every other key.
func (p *parser) decodeConcurrency(n *yaml.Node, c *Concurrency, path []string) {
	const want = "want an integer, adaptive or {adaptive: {min: N, max: M}}, got %s"
	switch {
	case n.Kind == yaml.ScalarNode && n.Value == "adaptive":
		*c = Concurrency{Adaptive: &AdaptiveConcurrency{}}
	case n.Kind == yaml.ScalarNode:
		v, err := strconv.Atoi(n.Value)
		if n.ShortTag() != "!!int" || err != nil {
			p.errorf(path, want, describe(n))
			return
		}
		*c = Concurrency{Limit: v}
	case n.Kind == yaml.MappingNode && len(n.Content) == 2 && deref(n.Content[0]).Value == "adaptive":
		a := &AdaptiveConcurrency{}
		*c = Concurrency{Adaptive: a}
		ap := append(slices.Clone(path), "adaptive")
		v := deref(n.Content[1])
		p.note(ap, n.Content[0].Line, !isNull(v))
		if isNull(v) {
			return
		}
		if v.Kind != yaml.MappingNode {
			p.errorf(ap, "want a mapping of min, max and initial, got %s", describe(v))
			return
		}
		p.pairs(v, ap, map[string]bool{}, func(k, val *yaml.Node, kp []string) {
			dst := map[string]*int{"min": &a.Min, "max": &a.Max, "initial": &a.Initial}[k.Value]
			if dst == nil {
				p.add(k.Line, kp, unknownKey(k.Value, adaptiveType))
				return
			}
			if val = deref(val); isNull(val) {
				return
			}
			x, err := strconv.Atoi(val.Value)
			if val.Kind != yaml.ScalarNode || val.ShortTag() != "!!int" || err != nil {
				p.errorf(kp, "want an integer, got %s", describe(val))
				return
			}
			*dst = x
		})
	default:
		p.errorf(path, want, describe(n))
	}
}
