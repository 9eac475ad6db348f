package task

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// ErrReplyRefused is wrapped (together with ErrPoison) by Parse when a
// task's Task-Reply-To is not a subject the worker may answer on.
var ErrReplyRefused = errors.New("reply subject refused")

// NeverReply are the subjects a worker never answers a Task-Reply-To on,
// whatever its configuration: the JetStream, KV, object store, system and
// micro service APIs. A reply there would be a request made with the
// worker's own rights (deleting a stream, purging results).
var NeverReply = []string{"$JS.>", "$KV.>", "$O.>", "$SYS.>", "$SRV.>"}

// DefaultReplySubjects is the default allow-list of reply subjects: the
// inboxes request/response clients listen on.
var DefaultReplySubjects = []string{"_INBOX.>"}

// ValidSubject reports whether s is a subject one can publish to, by the
// server's rules (nats-server's IsValidPublishSubject): non-empty tokens
// separated by dots, no token that is a wildcard (`*`, `>`), no whitespace;
// stricter than the server, it also refuses control characters, invalid
// UTF-8 and subjects over 4 KiB, none of which a real inbox has.
func ValidSubject(s string) bool {
	return validSubject(s, false)
}

// ValidPattern reports whether p is a subject or a subscription pattern:
// like ValidSubject, but a token may be `*` (one token) and the last token
// may be `>` (one or more tokens). A `*` or `>` inside a longer token is
// refused: the server's routing reads it as a literal character but its
// filter matching as a wildcard, and a user who writes `app*` means a glob
// that NATS does not have.
func ValidPattern(p string) bool {
	return validSubject(p, true)
}

func validSubject(s string, wildcards bool) bool {
	if s == "" || len(s) > 4096 || !utf8.ValidString(s) {
		return false
	}
	rest := s
	for {
		tok, tail, more := strings.Cut(rest, ".")
		switch {
		case tok == "":
			return false
		case tok == ">":
			if !wildcards || more {
				return false
			}
		case tok == "*":
			if !wildcards {
				return false
			}
		default:
			for i := 0; i < len(tok); i++ {
				if c := tok[i]; c <= ' ' || c == 0x7f || wildcards && (c == '*' || c == '>') {
					return false
				}
			}
		}
		if !more {
			return true
		}
		rest = tail
	}
}

// SubjectMatches reports whether the literal subject matches pattern, with
// the server's wildcard rules: `*` matches exactly one token, a final `>`
// one or more. Tokens compare exactly (subjects are case-sensitive); a `*`
// or `>` inside a longer token is a literal character.
func SubjectMatches(subject, pattern string) bool {
	for {
		ptok, prest, pmore := strings.Cut(pattern, ".")
		stok, srest, smore := strings.Cut(subject, ".")
		switch {
		case ptok == ">" && !pmore:
			return stok != ""
		case ptok != "*" && ptok != stok:
			return false
		case stok == "":
			return false
		}
		if !pmore || !smore {
			return pmore == smore
		}
		pattern, subject = prest, srest
	}
}

// ReplyRules decide which Task-Reply-To subjects a worker answers on: those
// matching an allowed pattern and no denied one. Denied patterns always win.
// A ReplyRules is immutable and safe for concurrent use.
type ReplyRules struct {
	allow, deny []string
}

// NewReplyRules returns the rules allowing the allow patterns (nil: the
// DefaultReplySubjects) and denying NeverReply plus the deny patterns (the
// worker's own stream subjects and admin plane). A pattern that is not a
// valid subject or wildcard pattern is an error.
func NewReplyRules(allow, deny []string) (*ReplyRules, error) {
	if allow == nil {
		allow = DefaultReplySubjects
	}
	r := &ReplyRules{
		allow: append([]string(nil), allow...),
		deny:  append(append([]string(nil), NeverReply...), deny...),
	}
	for _, p := range append(append([]string(nil), r.allow...), r.deny...) {
		if !ValidPattern(p) {
			return nil, fmt.Errorf("reply subjects: %q is not a subject or wildcard pattern", p)
		}
	}
	return r, nil
}

// Check returns nil when the worker may publish a reply on subject, else an
// error wrapping ErrReplyRefused that says why. A nil ReplyRules allows
// only the DefaultReplySubjects and denies NeverReply.
func (r *ReplyRules) Check(subject string) error {
	if !ValidSubject(subject) {
		return fmt.Errorf("%w: %q is not a valid subject", ErrReplyRefused, subject)
	}
	allow, deny := DefaultReplySubjects, NeverReply
	if r != nil {
		allow, deny = r.allow, r.deny
	}
	for _, p := range deny {
		if SubjectMatches(subject, p) {
			return fmt.Errorf("%w: %q is reserved (%s)", ErrReplyRefused, subject, p)
		}
	}
	for _, p := range allow {
		if SubjectMatches(subject, p) {
			return nil
		}
	}
	return fmt.Errorf("%w: %q matches none of worker.reply_subjects %v", ErrReplyRefused, subject, allow)
}
