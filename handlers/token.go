package handlers

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
)

// tokenSource yields a bearer token, either fixed (value set, path empty)
// or read from a file and re-read when the file's modification time or
// size changes. It is safe for concurrent use. Its errors name the file but
// never contain the token.
type tokenSource struct {
	path string
	kind string // what the file holds, for errors; default "bearer token"

	mu    sync.RWMutex
	mod   time.Time // stamp of the file the value was read from
	size  int64
	value string
}

func (s *tokenSource) get() (string, error) {
	if s.path == "" {
		return s.value, nil
	}
	kind := s.kind
	if kind == "" {
		kind = "bearer token"
	}
	fi, statErr := os.Stat(s.path)
	s.mu.RLock()
	v, fresh := s.value, statErr == nil && fi.ModTime().Equal(s.mod) && fi.Size() == s.size
	s.mu.RUnlock()
	if fresh {
		return v, nil
	}
	if statErr != nil {
		if v != "" {
			return v, nil // mid-rotation (file swapped): keep the last good token
		}
		return "", fmt.Errorf("%s: %w", kind, statErr)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if fi.ModTime().Equal(s.mod) && fi.Size() == s.size && s.value != "" {
		return s.value, nil // another caller re-read it meanwhile
	}
	raw, err := os.ReadFile(s.path)
	if err != nil {
		if s.value != "" {
			return s.value, nil
		}
		return "", fmt.Errorf("%s: %w", kind, err)
	}
	tok := strings.TrimSpace(string(raw))
	switch {
	case tok == "":
		err = errors.New("is empty")
	case !validHeaderValue(tok):
		err = errors.New("holds an invalid token")
	}
	if err != nil {
		if s.value != "" {
			return s.value, nil // probably caught mid-write: try again next call
		}
		return "", fmt.Errorf("%s file %s %w", kind, s.path, err)
	}
	s.value = tok
	if int64(len(raw)) == fi.Size() {
		// Record the stamp only when what was read matches it; otherwise the
		// file changed under us and the next call reads it again.
		s.mod, s.size = fi.ModTime(), fi.Size()
	}
	return tok, nil
}
