package task

import (
	"errors"
	"fmt"
	"strings"
)

// ValidType reports why typ cannot be a task type, or nil: it stands in
// subjects as tasks.<typ> and results.<typ>.<id>, so it is dot-separated
// non-empty tokens without wildcards, whitespace or control characters.
func ValidType(typ string) error {
	if typ == "" {
		return errors.New("empty task type")
	}
	for tok := range strings.SplitSeq(typ, ".") {
		if tok == "" {
			return fmt.Errorf("task type %q has an empty token", typ)
		}
		for _, c := range tok {
			if c == '*' || c == '>' || c <= ' ' || c == 0x7f {
				return fmt.Errorf("task type %q has %q; wildcards, spaces and control characters are not allowed", typ, c)
			}
		}
	}
	return nil
}
