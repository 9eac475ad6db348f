package config

import (
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// maxDepth bounds every walk of the node tree, which aliases can make
// cyclic.
const maxDepth = 64

// deref follows aliases to the node they name.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < maxDepth; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	n = deref(n)
	return n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

// isMerge reports a "<<" merge key.
func isMerge(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && k.ShortTag() == "!!merge"
}

// mergeSources lists the mappings a merge key's value brings in, in
// priority order.
func mergeSources(v *yaml.Node) []*yaml.Node {
	v = deref(v)
	if v == nil {
		return nil
	}
	if v.Kind == yaml.SequenceNode {
		return v.Content
	}
	return []*yaml.Node{v}
}

// lookup returns the key and value nodes of key in the mapping n,
// following aliases and merge keys the way yaml.v3 decodes them: a key
// written in the mapping wins over a merged one. Large mappings are
// indexed on first use, so that checking every entry of a long list of
// backends stays linear.
func (p *parser) lookup(n *yaml.Node, key string) (k, v *yaml.Node) {
	return p.lookupDepth(n, key, 0)
}

// mapIndex is the keys written in one mapping, and its merge values.
type mapIndex struct {
	keys   map[string]int // key → index of the key node in Content
	merges []*yaml.Node
}

func (p *parser) lookupDepth(n *yaml.Node, key string, depth int) (*yaml.Node, *yaml.Node) {
	n = deref(n)
	if n == nil || n.Kind != yaml.MappingNode || depth > maxDepth {
		return nil, nil
	}
	idx, ok := p.maps[n]
	if !ok {
		idx = &mapIndex{keys: make(map[string]int, len(n.Content)/2)}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			switch {
			case isMerge(k):
				idx.merges = append(idx.merges, n.Content[i+1])
			case k.Kind == yaml.ScalarNode:
				if _, dup := idx.keys[k.Value]; !dup {
					idx.keys[k.Value] = i
				}
			}
		}
		if p.maps == nil {
			p.maps = map[*yaml.Node]*mapIndex{}
		}
		p.maps[n] = idx
	}
	if i, ok := idx.keys[key]; ok {
		return n.Content[i], n.Content[i+1]
	}
	for _, m := range idx.merges {
		for _, src := range mergeSources(m) {
			if k, v := p.lookupDepth(src, key, depth+1); k != nil {
				return k, v
			}
		}
	}
	return nil, nil
}

// find follows path from the document's top mapping. It returns the node
// at the end of path (nil when some part is missing) and the line of the
// deepest part that exists: the line of its key, or of its list item.
func (p *parser) find(path []string) (*yaml.Node, int) {
	n := p.body
	if n == nil {
		return nil, 0
	}
	line := n.Line
	for _, seg := range path {
		n = deref(n)
		if n == nil {
			return nil, line
		}
		switch n.Kind {
		case yaml.MappingNode:
			k, v := p.lookup(n, seg)
			if k == nil {
				return nil, line
			}
			line, n = k.Line, v
		case yaml.SequenceNode:
			i, err := strconv.Atoi(strings.TrimSuffix(strings.TrimPrefix(seg, "["), "]"))
			if err != nil || i < 0 || i >= len(n.Content) {
				return nil, line
			}
			n = n.Content[i]
			line = n.Line
		default:
			return nil, line
		}
	}
	return n, line
}

// checkKeys reports every mapping key that is not text (a list, a mapping,
// or an alias of one).
func (p *parser) checkKeys(n *yaml.Node, path []string, depth int) {
	if n == nil || depth > maxDepth {
		return
	}
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if dk := deref(k); dk == nil || dk.Kind != yaml.ScalarNode {
				p.add(k.Line, path, "a key must be text, got "+describe(dk))
				continue
			}
			p.checkKeys(v, append(slices.Clone(path), k.Value), depth+1)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p.checkKeys(c, append(slices.Clone(path), index(i)), depth+1)
		}
	}
}

// has reports whether the file sets path to something other than null.
// Defaults apply only to keys the file leaves out, so that an explicit
// zero is checked like any other value instead of being replaced.
func (p *parser) has(path ...string) bool {
	n, _ := p.find(path)
	return n != nil && !isNull(n)
}

// lineOf is the line of the deepest part of path found in the file.
func (p *parser) lineOf(path []string) int {
	_, line := p.find(path)
	return line
}

var unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()

// checkInts walks the file alongside the type it decodes into and reports
// numbers with a fraction or exponent in integer fields, which yaml.v3
// would silently truncate (max_concurrency: 1.5 would become 1).
func (p *parser) checkInts(n *yaml.Node, t reflect.Type, path []string, line, depth int) {
	n = deref(n)
	if n == nil || depth > maxDepth || reflect.PointerTo(t).Implements(unmarshalerType) {
		return
	}
	switch t.Kind() {
	case reflect.Pointer:
		p.checkInts(n, t.Elem(), path, line, depth+1)
	case reflect.Struct, reflect.Map:
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if isMerge(k) {
				for _, src := range mergeSources(v) {
					p.checkInts(src, t, path, k.Line, depth+1)
				}
				continue
			}
			var ft reflect.Type
			if t.Kind() == reflect.Map {
				ft = t.Elem()
			} else if f, ok := fieldByKey(t, k.Value); ok {
				ft = f.Type
			} else {
				continue // reported by the decoder as an unknown key
			}
			p.checkInts(v, ft, append(slices.Clone(path), k.Value), k.Line, depth+1)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return
		}
		for i, c := range n.Content {
			p.checkInts(c, t.Elem(), append(slices.Clone(path), index(i)), c.Line, depth+1)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!float" && !p.reported(path) {
			p.add(line, path, fmt.Sprintf("want an integer, got %s", n.Value))
		}
	}
}

// typeAt is the Go type a key path decodes into, nil when the path is not
// part of a Config.
func typeAt(path []string) reflect.Type {
	t := reflect.TypeFor[Config]()
	for _, seg := range path {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		switch t.Kind() {
		case reflect.Map, reflect.Slice:
			t = t.Elem()
		case reflect.Struct:
			f, ok := fieldByKey(t, seg)
			if !ok {
				return nil
			}
			t = f.Type
		default:
			return nil
		}
	}
	return t
}

// reported tells whether a problem with path is already recorded.
func (p *parser) reported(path []string) bool {
	if p.paths == nil {
		p.paths = map[string]bool{}
		for _, e := range p.errs {
			p.paths[e.Path] = true
		}
	}
	return p.paths[joinPath(path)]
}

// fieldByKey finds the struct field decoded from a YAML key.
func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := range t.NumField() {
		f := t.Field(i)
		if name, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); name == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// keysOf lists the YAML keys of the struct type named name ("config.Worker"),
// for "unknown key" errors; nil for other types.
func keysOf(name string) []string {
	var keys []string
	var visit func(t reflect.Type, depth int) bool
	visit = func(t reflect.Type, depth int) bool {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Map || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct || depth > 8 {
			return false
		}
		if t.String() == name {
			for i := range t.NumField() {
				if k, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); k != "" && k != "-" {
					keys = append(keys, k)
				}
			}
			return true
		}
		for i := range t.NumField() {
			if visit(t.Field(i).Type, depth+1) {
				return true
			}
		}
		return false
	}
	visit(reflect.TypeFor[Config](), 0)
	return keys
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
