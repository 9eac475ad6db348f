package config

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// This file turns the errors of reading YAML text into *Error values with
// the right line: the library leaves the line out or gets it wrong for
// some of them.

var yamlLine = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// parserProblems are the messages of libyaml's parser (as opposed to its
// scanner). The library reports their line 0-based, one too low, and
// leaves the line out when it is the first.
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

var unknownAnchor = regexp.MustCompile(`^unknown anchor '(.*)' referenced$`)

// syntaxErr turns an error of reading the YAML text into an *Error,
// correcting the line where the library gets it wrong or leaves it out.
func (p *parser) syntaxErr(err error) *Error {
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
	case line == 0:
		line = 1 // the library leaves out line 1
	}
	return &Error{File: p.file, Line: line, Reason: msg}
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

// typeErr is the error of an UnmarshalYAML method for a bad value: a
// *yaml.TypeError, as the library reports its own, so that decoding goes
// on and every problem is reported at once (see unmarshalErr).
func typeErr(n *yaml.Node, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %s", n.Line, msg)}}
}
