package client

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Sentinels matched by *Error through errors.Is.
var (
	// ErrNotFound matches an *Error with status 404.
	ErrNotFound = errors.New("client: not found")
	// ErrPrecondition matches an *Error with status 412: an IfMatch or
	// IfNoneMatch precondition did not hold.
	ErrPrecondition = errors.New("client: precondition failed")
	// ErrUnauthenticated matches an *Error with status 401: the request
	// carried no token, or one that is malformed, unknown, revoked or
	// expired (WithAuth).
	ErrUnauthenticated = errors.New("client: unauthenticated")
	// ErrForbidden matches an *Error with status 403: the token's scopes
	// do not allow the request.
	ErrForbidden = errors.New("client: forbidden")
	// ErrQuotaExceeded matches an *Error with status 429, code
	// "quota_exceeded": the namespace is over one of its quotas (the
	// message names which); the request did not run. It is not retried.
	ErrQuotaExceeded = errors.New("client: quota exceeded")
)

// Error is a response with an error status.
type Error struct {
	Status  int    // HTTP status code
	Code    string // API error code such as "invalid_key"; "" when the body was not an API error
	Message string // the server's message
	// MissingShards names the shards an incomplete query could not read
	// (Code "incomplete", status 503); nil otherwise.
	MissingShards []int
}

func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("client: %s (status %d)", e.Message, e.Status)
	}
	return fmt.Sprintf("client: %s (status %d, %s)", e.Message, e.Status, e.Code)
}

// Is reports whether target is the sentinel for e's status.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrPrecondition:
		return e.Status == http.StatusPreconditionFailed
	case ErrUnauthenticated:
		return e.Status == http.StatusUnauthorized
	case ErrForbidden:
		return e.Status == http.StatusForbidden
	case ErrQuotaExceeded:
		return e.Status == http.StatusTooManyRequests && e.Code == "quota_exceeded"
	}
	return false
}

// maxMessage bounds the message taken from a non-JSON error body.
const maxMessage = 512

func newError(resp *http.Response, body []byte) *Error {
	e := &Error{Status: resp.StatusCode}
	var api struct {
		Error         string `json:"error"`
		Code          string `json:"code"`
		MissingShards []int  `json:"missing_shards"`
	}
	if json.Unmarshal(body, &api) == nil && api.Code != "" {
		e.Code, e.Message, e.MissingShards = api.Code, api.Error, api.MissingShards
		return e
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > maxMessage {
		msg = msg[:maxMessage] + "..."
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	e.Message = msg
	return e
}
