package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Load reads the config file at path and parses it (see Parse). An error
// reading the file does not wrap ErrInvalid; every problem in its content
// does.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes one YAML document strictly, fills the defaults of the keys
// it leaves out (see defaults.go) and validates the result.
//
// file names the source in errors and anchors relative paths
// (routes.*.validate.json_schema is resolved against its directory and
// stored back resolved). An empty document is a valid config: every
// default, no backends and no routes.
//
// A bad config returns a nil *Config and every problem found, joined with
// errors.Join and ordered by line; each is an *Error wrapping ErrInvalid.
// A syntax error stops at the first problem, as the rest of the text
// cannot be trusted; values are validated only once every key and type is
// right, so that one mistake is not reported twice.
func Parse(file string, data []byte) (*Config, error) {
	p := &parser{file: file, data: data, keys: map[string]written{}}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return p.finish(&Config{})
		}
		return nil, p.syntaxErr(err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, p.syntaxErr(err)
	default:
		return nil, &Error{File: file, Line: extra.Line, Reason: "a second YAML document (---); a config is one document"}
	}
	if len(root.Content) == 0 || isNull(root.Content[0]) {
		return p.finish(&Config{}) // only comments, or "~"
	}
	body := deref(root.Content[0])
	if body.Kind != yaml.MappingNode {
		return nil, &Error{File: file, Line: body.Line, Reason: "the config must be a mapping of keys (nats:, worker:, backends:, ...), got " + describe(body)}
	}
	p.top = body.Line
	var c Config
	p.decode(body, reflect.ValueOf(&c).Elem(), nil)
	return p.finish(&c)
}

// parser holds what Parse knows about one file while it decodes it.
type parser struct {
	file    string
	data    []byte
	top     int                // line of the document's top mapping
	keys    map[string]written // key paths the file writes, see note
	errs    []*Error
	work    int                 // nodes visited, see step
	merging map[*yaml.Node]bool // mappings being merged, see pairs
}

// written is where the file writes a key path (or list item).
type written struct {
	line int
	set  bool // to something other than null
}

// finish applies the defaults and validates c unless decoding failed.
func (p *parser) finish(c *Config) (*Config, error) {
	if len(p.errs) == 0 {
		c.applyDefaults(p.has)
		p.validate(c)
	}
	if err := joinErrors(p.errs); err != nil {
		return nil, err
	}
	return c, nil
}

// add records a problem at line.
func (p *parser) add(line int, path []string, reason string) {
	p.errs = append(p.errs, &Error{File: p.file, Line: line, Path: joinPath(path), Reason: reason})
}

// errorf records a problem with a value, at the line of its key (or of the
// deepest part of path written in the file, when path is a key the file
// leaves out).
func (p *parser) errorf(path []string, format string, args ...any) {
	p.add(p.lineOf(path), slices.Clone(path), fmt.Sprintf(format, args...))
}

// note records that the file writes path at line; set is false for null.
func (p *parser) note(path []string, line int, set bool) {
	p.keys[strings.Join(path, "\x00")] = written{line, set}
}

// has reports whether the file sets path to something other than null.
// Defaults apply only to keys the file leaves out, so that an explicit
// zero is checked like any other value instead of being replaced.
func (p *parser) has(path ...string) bool {
	return p.keys[strings.Join(path, "\x00")].set
}

// lineOf is the line of the deepest part of path written in the file:
// the line of its key, or of its list item.
func (p *parser) lineOf(path []string) int {
	for i := len(path); i > 0; i-- {
		if w, ok := p.keys[strings.Join(path[:i], "\x00")]; ok {
			return w.line
		}
	}
	return p.top
}
