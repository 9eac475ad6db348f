package handlers

import "errors"

// ErrInvalidOption is wrapped by the errors of the backend constructors (NewHTTP,
// NewNATS) when an option is missing or impossible. Test with errors.Is; the
// message names the option, never a secret.
var ErrInvalidOption = errors.New("invalid backend option")
