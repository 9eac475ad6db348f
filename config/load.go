package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ErrInvalid is wrapped by every problem Parse finds in a config.
var ErrInvalid = errors.New("invalid config")

// Error is one problem in a config file, at a line.
type Error struct {
	File   string
	Line   int    // 0 when unknown
	Path   string // dotted key path, e.g. backends.flow.retry.max_attempts
	Reason string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(":" + strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// Unwrap makes every Error match ErrInvalid.
func (e *Error) Unwrap() error { return ErrInvalid }

// Load reads and parses the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes data strictly, applies defaults and validates the result.
// file names the source in errors and anchors relative paths (JSON schema
// files). All problems are returned at once, joined, ordered by line; each
// is an *Error wrapping ErrInvalid.
func Parse(file string, data []byte) (*Config, error) {
	p := &parser{file: file}
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			c := &Config{}
			c.applyDefaults()
			return c, nil
		}
		return nil, p.yamlErr(&root, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		line := extra.Line
		if err != nil {
			return nil, p.yamlErr(&root, err)
		}
		return nil, &Error{File: file, Line: line, Reason: "more than one YAML document; a config is one document"}
	}
	p.root = &root
	if body := docBody(&root); body != nil && body.Kind != yaml.MappingNode {
		if body.Kind == yaml.ScalarNode && body.Tag == "!!null" {
			c := &Config{}
			c.applyDefaults()
			return c, nil
		}
		return nil, &Error{File: file, Line: body.Line, Reason: "the config must be a mapping of keys"}
	}

	var c Config
	strict := yaml.NewDecoder(bytes.NewReader(data))
	strict.KnownFields(true)
	if err := strict.Decode(&c); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, p.yamlErr(&root, err)
		}
		for _, msg := range te.Errors {
			p.addYAML(msg)
		}
	}
	p.explicitZeros(docBody(&root), nil)
	if len(p.errs) == 0 {
		c.applyDefaults()
		p.validate(&c)
	}
	if len(p.errs) > 0 {
		sort.SliceStable(p.errs, func(i, j int) bool { return p.errs[i].Line < p.errs[j].Line })
		errs := make([]error, len(p.errs))
		for i, e := range p.errs {
			errs[i] = e
		}
		return nil, errors.Join(errs...)
	}
	return &c, nil
}

type parser struct {
	file string
	root *yaml.Node
	errs []*Error
}

func docBody(root *yaml.Node) *yaml.Node {
	if root.Kind == yaml.DocumentNode && len(root.Content) > 0 {
		return root.Content[0]
	}
	return nil
}

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// yamlErr turns a yaml.v3 syntax error into an *Error.
func (p *parser) yamlErr(_ *yaml.Node, err error) error {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: p.file, Line: line, Reason: m[2]}
	}
	return &Error{File: p.file, Reason: strings.TrimPrefix(msg, "yaml: ")}
}

var (
	unknownField = regexp.MustCompile(`^field (\S+) not found in type config\.(\w+)$`)
	cannotDecode = regexp.MustCompile("^cannot unmarshal !!(\\w+) `(.*)` into (.+)$")
	gotValue     = regexp.MustCompile(`got "(.*)"$`)
)

// addYAML records one of yaml.v3's per-field errors ("line N: ...") with
// the key path found at that line.
func (p *parser) addYAML(msg string) {
	m := yamlLine.FindStringSubmatch(msg)
	if m == nil {
		p.errs = append(p.errs, &Error{File: p.file, Reason: msg})
		return
	}
	line, _ := strconv.Atoi(m[1])
	reason := m[2]
	e := &Error{File: p.file, Line: line, Reason: reason}
	if u := unknownField.FindStringSubmatch(reason); u != nil {
		e.Path = joinPath(p.findKey(line, u[1], ""))
		e.Reason = fmt.Sprintf("unknown key %q", u[1])
		if known := knownKeys[u[2]]; known != "" {
			e.Reason += " (valid keys: " + known + ")"
		}
	} else if c := cannotDecode.FindStringSubmatch(reason); c != nil {
		e.Path = joinPath(p.findKey(line, "", c[2]))
		e.Reason = fmt.Sprintf("want %s, got %s %q", goTypeName(c[3]), yamlKind(c[1]), c[2])
	} else if g := gotValue.FindStringSubmatch(reason); g != nil {
		e.Path = joinPath(p.findKey(line, "", g[1]))
	} else {
		e.Path = joinPath(p.findKey(line, "", ""))
	}
	p.errs = append(p.errs, e)
}

// knownKeys lists the keys of each section for "unknown key" errors.
var knownKeys = map[string]string{
	"Config":      "prefix, nats, streams, worker, health, cache, backends, routes",
	"NATS":        "url, creds, user, password, token, tls",
	"TLS":         "ca, cert, key",
	"Streams":     "replicas, results_max_age, dlq_max_bytes",
	"Worker":      "concurrency, ack_wait, max_deliver, max_payload",
	"Health":      "interval, sla_target, breaker_open_alert_after",
	"Cache":       "max_size_mb",
	"Backend":     "http, nats, builtin, timeout, retry, breaker, max_concurrency, rate_limit, tags, auth",
	"HTTPBackend": "url, health_url, headers",
	"NATSBackend": "subject",
	"Auth":        "bearer_token_file, bearer_token_env",
	"Retry":       "max_attempts, backoff, max_backoff, jitter",
	"Breaker":     "failure_threshold, failure_rate, min_calls, period, delay, success_threshold, half_open_max_calls",
	"Route":       "backends, strategy, weights, deadline, hedge_after, cache, validate",
	"RouteCache":  "ttl, key_headers, shared",
	"Validate":    "json_schema, require_json",
}

func goTypeName(t string) string {
	switch {
	case t == "int" || strings.HasPrefix(t, "int"):
		return "an integer"
	case strings.HasPrefix(t, "float"):
		return "a number"
	case t == "bool":
		return "true or false"
	case t == "string":
		return "a string"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "map["):
		return "a mapping"
	default:
		return "a mapping" // one of our structs
	}
}

func yamlKind(tag string) string {
	switch tag {
	case "str":
		return "text"
	case "map":
		return "a mapping"
	case "seq":
		return "a list"
	case "int":
		return "integer"
	case "float":
		return "number"
	}
	return tag
}

// findKey returns the path of the key at line, preferring a key named
// name, or one whose scalar value is value (several keys share a line in
// flow style), else the first key on the line.
func (p *parser) findKey(line int, name, value string) []string {
	var best, first []string
	var walk func(n *yaml.Node, path []string)
	walk = func(n *yaml.Node, path []string) {
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				kp := append(slices.Clone(path), k.Value)
				if k.Line == line || v.Line == line {
					if first == nil {
						first = kp
					}
					if (name != "" && k.Value == name) || (value != "" && v.Kind == yaml.ScalarNode && v.Value == value) {
						best = kp
					}
				}
				walk(v, kp)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				ip := append(slices.Clone(path), index(i))
				if c.Line == line && first == nil && c.Kind == yaml.ScalarNode {
					first = ip
				}
				if c.Line == line && value != "" && c.Value == value {
					best = ip
				}
				walk(c, ip)
			}
		}
	}
	if b := docBody(p.root); b != nil {
		walk(b, nil)
	}
	if best != nil {
		return best
	}
	return first
}

// lineOf returns the line of the deepest node of path that exists.
func (p *parser) lineOf(path []string) int {
	n := docBody(p.root)
	line := 0
	if n != nil {
		line = n.Line
	}
	for _, seg := range path {
		if n == nil {
			break
		}
		switch n.Kind {
		case yaml.MappingNode:
			var next *yaml.Node
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == seg {
					line, next = n.Content[i].Line, n.Content[i+1]
					break
				}
			}
			n = next
		case yaml.SequenceNode:
			i, err := strconv.Atoi(strings.Trim(seg, "[]"))
			if err != nil || i >= len(n.Content) {
				return line
			}
			n = n.Content[i]
			line = n.Line
		default:
			return line
		}
	}
	return line
}

// joinPath renders a key path: keys joined with dots, list indexes in
// brackets (routes.code.generate.backends[1]).
func joinPath(path []string) string {
	var b strings.Builder
	for i, seg := range path {
		if i > 0 && !strings.HasPrefix(seg, "[") {
			b.WriteByte('.')
		}
		b.WriteString(seg)
	}
	return b.String()
}

// index is the path segment of a list element.
func index(i int) string { return "[" + strconv.Itoa(i) + "]" }

// errorf records a validation problem at path.
func (p *parser) errorf(path []string, format string, args ...any) {
	line := 0
	if p.root != nil {
		line = p.lineOf(path)
	}
	p.errs = append(p.errs, &Error{File: p.file, Line: line, Path: joinPath(path), Reason: fmt.Sprintf(format, args...)})
}

// mustBePositive are keys whose explicit zero is impossible; without this
// check the default would silently replace it.
var mustBePositive = map[string]bool{
	"concurrency": true, "max_deliver": true, "ack_wait": true, "timeout": true, "max_attempts": true,
	"failure_threshold": true, "delay": true, "success_threshold": true, "replicas": true, "interval": true,
	"max_size_mb": true, "results_max_age": true, "backoff": true, "max_backoff": true, "min_calls": true,
	"period": true, "ttl": true, "sla_target": true, "breaker_open_alert_after": true,
}

func (p *parser) explicitZeros(n *yaml.Node, path []string) {
	if n == nil || n.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		kp := append(slices.Clone(path), k.Value)
		if v.Kind == yaml.ScalarNode && mustBePositive[k.Value] && isZero(v.Value) {
			p.errs = append(p.errs, &Error{File: p.file, Line: k.Line, Path: joinPath(kp), Reason: "must be greater than 0"})
		}
		if v.Kind == yaml.MappingNode {
			p.explicitZeros(v, kp)
		}
	}
}

func isZero(s string) bool {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return f == 0
	}
	if d, err := time.ParseDuration(s); err == nil {
		return d == 0
	}
	return false
}
