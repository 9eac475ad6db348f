package handlers

import "errors"

// ErrBadOption is wrapped by the errors of the backend constructors (NewHTTP,
// NewNATS) when an option is missing or impossible. Test with errors.Is; the
// message names the option, never a secret.
var ErrBadOption = errors.New("invalid backend option")
