package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"

	"gopkg.in/yaml.v3"
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
	p := &parser{file: file, data: data, seen: map[string]int{}}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return p.finish(&Config{})
		}
		return nil, p.syntaxErr(err, true)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, p.syntaxErr(err, true)
	default:
		return nil, &Error{File: file, Line: extra.Line, Reason: "a second YAML document (---); a config is one document"}
	}
	if len(root.Content) == 0 || isNull(root.Content[0]) {
		return p.finish(&Config{}) // only comments, or "~"
	}
	p.body = root.Content[0]
	if b := deref(p.body); b.Kind != yaml.MappingNode {
		return nil, &Error{File: file, Line: b.Line, Reason: "the config must be a mapping of keys (nats:, worker:, backends:, ...), got " + describe(b)}
	}

	// Every key of a config is text; a list or mapping as a key is refused
	// here, before yaml.v3 can panic on one next to a merge key.
	p.checkKeys(p.body, nil, 0)
	if len(p.errs) > 0 {
		return nil, joinErrors(p.errs)
	}
	var c Config
	if err := p.decode(&c); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, p.syntaxErr(err, false)
		}
		for _, msg := range te.Errors {
			p.addYAML(msg)
		}
	}
	p.checkInts(p.body, reflect.TypeFor[Config](), nil, p.body.Line, 0)
	return p.finish(&c)
}

// decode decodes the file strictly into c: a key that is not a field is an
// error. Should yaml.v3 panic on some input, the panic is an error too, so
// that a bad file never crashes the worker.
func (p *parser) decode(c *Config) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("cannot decode this YAML: %v", v)
		}
	}()
	strict := yaml.NewDecoder(bytes.NewReader(p.data))
	strict.KnownFields(true)
	return strict.Decode(c)
}

// parser holds what Parse knows about one file while it decodes it.
type parser struct {
	file  string
	data  []byte
	body  *yaml.Node // the document's top mapping; nil for an empty file
	errs  []*Error
	seen  map[string]int      // yaml.v3 messages already placed, see pick
	lines map[int][]candidate // see onLine
	paths map[string]bool     // paths of errs, see reported
	maps  map[*yaml.Node]*mapIndex
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
	p.record(&Error{File: p.file, Line: line, Path: joinPath(path), Reason: reason})
}

// record keeps a problem.
func (p *parser) record(e *Error) {
	p.errs = append(p.errs, e)
	if p.paths != nil {
		p.paths[e.Path] = true
	}
}

// errorf records a problem with a value, at the line of its key (or of the
// deepest part of path written in the file, when path is a key the file
// leaves out).
func (p *parser) errorf(path []string, format string, args ...any) {
	p.add(p.lineOf(path), slices.Clone(path), fmt.Sprintf(format, args...))
}
