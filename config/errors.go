package config

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// ErrInvalid is wrapped by every problem Parse finds in a config: a syntax
// error, an unknown key, a value of the wrong type or an impossible value.
// errors.Is(err, ErrInvalid) tells a bad config from a file that could not
// be read.
var ErrInvalid = errors.New("invalid config")

// Error is one problem in a config file. Its text is
// "FILE:LINE: PATH: REASON", for example
//
//	worker.yaml:12: backends.flow.retry.max_attempts: must be at least 1, got 0
//
// Parse joins several of them with errors.Join (one a line, ordered by
// line); errors.As finds the first, and each unwraps to ErrInvalid.
type Error struct {
	File   string // as given to Parse or Load; may be empty
	Line   int    // 1-based; 0 when the line is not known
	Path   string // dotted key path, list indexes in brackets: routes.code.generate.backends[1]; may be empty
	Reason string // what is wrong, naming the value found
}

// Error formats the problem as FILE:LINE: PATH: REASON, leaving out the
// parts that are unknown.
func (e *Error) Error() string {
	var b strings.Builder
	switch {
	case e.File != "" && e.Line > 0:
		b.WriteString(e.File + ":" + strconv.Itoa(e.Line) + ": ")
	case e.File != "":
		b.WriteString(e.File + ": ")
	case e.Line > 0:
		b.WriteString("line " + strconv.Itoa(e.Line) + ": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

// Unwrap makes every Error match ErrInvalid.
func (e *Error) Unwrap() error { return ErrInvalid }

// maxProblems is how many problems Parse reports; a file with more is
// better fixed from the top.
const maxProblems = 100

// joinErrors orders problems by line (keeping the order of those on the
// same line) and joins them; nil when there are none. Past maxProblems it
// says how many more there are.
func joinErrors(errs []*Error) error {
	if len(errs) == 0 {
		return nil
	}
	slices.SortStableFunc(errs, func(a, b *Error) int { return a.Line - b.Line })
	n := min(len(errs), maxProblems)
	out := make([]error, n, n+1)
	for i, e := range errs[:n] {
		out[i] = e
	}
	if more := len(errs) - n; more > 0 {
		out = append(out, &Error{File: errs[0].File, Reason: fmt.Sprintf("and %d more problems", more)})
	}
	return errors.Join(out...)
}

// names lists names for a message: all of them up to 10, else the first
// 10 and how many more.
func names(list []string) string {
	const show = 10
	if len(list) <= show {
		return strings.Join(list, ", ")
	}
	return strings.Join(list[:show], ", ") + fmt.Sprintf(", and %d more", len(list)-show)
}

// didYouMean suggests the option closest to a misspelt name, as
// `, did you mean "x"?`, or "" when none is close (at most 2 edits, and
// fewer than half the name) or there are too many options to compare.
func didYouMean(name string, options []string) string {
	if len(options) > 200 || len(name) > 100 {
		return ""
	}
	best, bestD := "", 3
	for _, o := range options {
		if len(o) > 100 {
			continue
		}
		if d := editDistance(strings.ToLower(name), strings.ToLower(o)); d < bestD && 2*d < max(len(name), 2) {
			best, bestD = o, d
		}
	}
	if best == "" || best == name {
		return ""
	}
	return fmt.Sprintf(", did you mean %q?", best)
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
