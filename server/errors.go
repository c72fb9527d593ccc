package server

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"

	"lambdadb/auth"
	"lambdadb/changefeed"
	"lambdadb/internal/session"
	"lambdadb/lambda"
	"lambdadb/scatter"
	"lambdadb/shard"
)

// Errors raised by the HTTP layer itself; shard errors pass through.
var (
	errNotFound         = errors.New("server: not found")
	errMethodNotAllowed = errors.New("server: method not allowed")
	errBadPrecondition  = errors.New("server: malformed precondition")
	errBadBody          = errors.New("server: reading request body")
	errBadHandshake     = errors.New("server: bad WebSocket handshake")
	// Requests net/http refuses before any route runs (plainerrors.go).
	errBadRequest       = errors.New("server: bad request")
	errHeadersTooLarge  = errors.New("server: request headers too large")
	errTransferEncoding = errors.New("server: unsupported Transfer-Encoding")
	errHTTPVersion      = errors.New("server: unsupported HTTP version")
	errExpectation      = errors.New("server: unsupported Expect")
)

// statusClientClosed is the status recorded when the client went away
// before the request finished (nginx's 499); the client never sees it.
const statusClientClosed = 499

// errorStatus maps an error to its HTTP status and API error code. It is the
// one place where errors become statuses.
func errorStatus(err error) (int, string) {
	var tooBig *http.MaxBytesError
	switch {
	case errors.Is(err, auth.ErrUnauthenticated):
		return http.StatusUnauthorized, "unauthenticated"
	case errors.Is(err, auth.ErrForbidden):
		return http.StatusForbidden, "forbidden"
	case errors.Is(err, auth.ErrBootstrapped):
		return http.StatusConflict, "already_bootstrapped"
	case errors.Is(err, auth.ErrInvalid):
		return http.StatusBadRequest, "invalid"
	case errors.Is(err, auth.ErrNotFound):
		return http.StatusNotFound, "not_found"
	case errors.Is(err, shard.ErrInvalidKey):
		return http.StatusBadRequest, "invalid_key"
	case errors.Is(err, shard.ErrValueTooLarge), errors.As(err, &tooBig):
		return http.StatusRequestEntityTooLarge, "value_too_large"
	case errors.Is(err, shard.ErrPrecondition):
		return http.StatusPreconditionFailed, "precondition_failed"
	case errors.Is(err, errBadPrecondition):
		return http.StatusBadRequest, "bad_precondition"
	case errors.Is(err, shard.ErrBadConsistency):
		return http.StatusBadRequest, "bad_consistency"
	case errors.Is(err, shard.ErrInvalidScan):
		return http.StatusBadRequest, "invalid_scan"
	case errors.Is(err, session.ErrInvalid):
		return http.StatusBadRequest, "bad_session"
	case errors.Is(err, errBodyTimeout):
		return http.StatusRequestTimeout, "body_timeout"
	case errors.Is(err, errBadBody):
		return http.StatusBadRequest, "bad_body"
	case errors.Is(err, errNotFound), errors.Is(err, lambda.ErrNotFound):
		return http.StatusNotFound, "not_found"
	case errors.Is(err, changefeed.ErrExpired):
		return http.StatusGone, "cursor_expired"
	case errors.Is(err, changefeed.ErrBadCursor):
		return http.StatusBadRequest, "bad_cursor"
	case errors.Is(err, errBadParameter):
		return http.StatusBadRequest, "bad_parameter"
	case errors.Is(err, changefeed.ErrInvalidTrigger):
		return http.StatusBadRequest, "invalid_trigger"
	case errors.Is(err, changefeed.ErrTriggerNotFound):
		return http.StatusNotFound, "not_found"
	case errors.Is(err, changefeed.ErrDeadLetterNotFound):
		return http.StatusNotFound, "not_found"
	case errors.Is(err, changefeed.ErrOverloaded):
		return http.StatusServiceUnavailable, "overloaded"
	case errors.Is(err, changefeed.ErrTooManySubscribers):
		return http.StatusTooManyRequests, "too_many_subscribers"
	case errors.Is(err, changefeed.ErrClosed):
		return http.StatusServiceUnavailable, "closed"
	case errors.Is(err, changefeed.ErrNotPaused):
		return http.StatusConflict, "not_paused"
	case errors.Is(err, changefeed.ErrConflict):
		return http.StatusConflict, "conflict"
	case errors.Is(err, changefeed.ErrUnavailable):
		return http.StatusServiceUnavailable, "unavailable"
	case errors.Is(err, lambda.ErrInvalidName):
		return http.StatusBadRequest, "invalid_name"
	case errors.Is(err, lambda.ErrInvalidConfig):
		return http.StatusBadRequest, "invalid_config"
	case errors.Is(err, lambda.ErrInvalidModule):
		return http.StatusBadRequest, "invalid_module"
	case errors.Is(err, lambda.ErrNoEntrypoint):
		return http.StatusBadRequest, "no_entrypoint"
	case errors.Is(err, lambda.ErrModuleTooLarge):
		return http.StatusRequestEntityTooLarge, "module_too_large"
	case errors.Is(err, lambda.ErrRequestTooLarge):
		return http.StatusRequestEntityTooLarge, "request_too_large"
	case errors.Is(err, lambda.ErrConflict):
		return http.StatusConflict, "conflict"
	case errors.Is(err, lambda.ErrTooManyFunctions):
		return http.StatusConflict, "too_many_functions"
	case errors.Is(err, lambda.ErrOverloaded):
		return http.StatusTooManyRequests, "too_many_requests"
	case errors.Is(err, lambda.ErrStackOverflow): // before ErrHandler, which it matches too
		return http.StatusInternalServerError, "stack_overflow"
	case errors.Is(err, lambda.ErrHandler):
		return http.StatusInternalServerError, "handler_error"
	case errors.Is(err, lambda.ErrMemoryLimit):
		return http.StatusInternalServerError, "memory_limit"
	case errors.Is(err, lambda.ErrTimeout):
		return http.StatusGatewayTimeout, "timeout"
	case errors.Is(err, lambda.ErrClosed):
		return http.StatusServiceUnavailable, "closed"
	case errors.Is(err, scatter.ErrTooManyGroups): // before ErrInvalidQuery, which it matches too
		return http.StatusBadRequest, "too_many_groups"
	case errors.Is(err, scatter.ErrInvalidQuery), errors.Is(err, scatter.ErrInvalidAggregate):
		return http.StatusBadRequest, "invalid_query"
	case errors.Is(err, scatter.ErrIncomplete) && errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "timeout"
	case errors.Is(err, scatter.ErrIncomplete):
		return http.StatusServiceUnavailable, "incomplete"
	case errors.Is(err, scatter.ErrOverloaded):
		return http.StatusTooManyRequests, "too_many_requests"
	case errors.Is(err, scatter.ErrNoFunctions):
		return http.StatusNotImplemented, "no_functions"
	case errors.Is(err, errBadRequest):
		return http.StatusBadRequest, "bad_request"
	case errors.Is(err, errBadHandshake):
		return http.StatusBadRequest, "bad_handshake"
	case errors.Is(err, errHeadersTooLarge):
		return http.StatusRequestHeaderFieldsTooLarge, "headers_too_large"
	case errors.Is(err, errTransferEncoding):
		return http.StatusNotImplemented, "unsupported_transfer_encoding"
	case errors.Is(err, errHTTPVersion):
		return http.StatusHTTPVersionNotSupported, "unsupported_http_version"
	case errors.Is(err, errExpectation):
		return http.StatusExpectationFailed, "expectation_failed"
	case errors.Is(err, errMethodNotAllowed):
		return http.StatusMethodNotAllowed, "method_not_allowed"
	case errors.Is(err, shard.ErrUnknownNode):
		return http.StatusNotFound, "unknown_node"
	case errors.Is(err, shard.ErrMembership), errors.Is(err, shard.ErrIdentity):
		return http.StatusConflict, "conflict"
	case errors.Is(err, shard.ErrOverloaded):
		return http.StatusServiceUnavailable, "overloaded"
	case errors.Is(err, shard.ErrNotLeader):
		return http.StatusServiceUnavailable, "not_leader"
	case errors.Is(err, shard.ErrUnavailable):
		return http.StatusServiceUnavailable, "unavailable"
	case errors.Is(err, shard.ErrClosed):
		return http.StatusServiceUnavailable, "closed"
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, "timeout"
	case errors.Is(err, context.Canceled):
		return statusClientClosed, "canceled"
	}
	return http.StatusInternalServerError, "internal"
}

// apiError is the JSON body of every error response.
type apiError struct {
	Error string `json:"error"`
	Code  string `json:"code"`
	// MissingShards names the shards an incomplete query could not read.
	MissingShards []int `json:"missing_shards,omitempty"`
}

// writeError writes err as a JSON error response. Internal errors are
// logged and replaced by a generic message.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, code := errorStatus(err)
	msg := err.Error()
	level := slog.LevelDebug
	if code == "internal" {
		msg = "internal error"
		level = slog.LevelError
	}
	s.log.Log(r.Context(), level, "request failed",
		"method", r.Method, "path", r.URL.Path, "status", status, "code", code, "err", err)
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	body := apiError{Error: msg, Code: code}
	var ie *scatter.IncompleteError
	if errors.As(err, &ie) {
		body.MissingShards = ie.Missing
	}
	writeJSON(w, status, body)
}

// writeJSON writes v as a JSON response with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only our own response types reach here; they always marshal.
		status = http.StatusInternalServerError
		body = []byte(`{"error":"internal error","code":"internal"}`)
	}
	body = append(body, '\n')
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
