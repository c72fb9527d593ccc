package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"lambdadb/lambda"
	"lambdadb/namespace"
	"lambdadb/scatter"
)

// maxQueryBody bounds a POST /v1/query body.
const maxQueryBody = 64 << 10

// queryRequest is the body of POST /v1/query.
type queryRequest struct {
	Prefix    string        `json:"prefix"`
	Start     string        `json:"start"`
	End       string        `json:"end"`
	Aggregate *scatter.Spec `json:"aggregate"`
	Function  string        `json:"function"`
	// FunctionVersion pins the function's deploy (extension; 0: current).
	FunctionVersion uint64 `json:"function_version"`
	// Consistency overrides the ?consistency= parameter.
	Consistency string `json:"consistency"`
	TimeoutMS   int64  `json:"timeout_ms"`
}

// queryResponse is its answer.
type queryResponse struct {
	Result any           `json:"result"`
	Stats  scatter.Stats `json:"stats"`
}

// runQuery serves POST /v1/query.
func (s *Server) runQuery(w http.ResponseWriter, r *http.Request) {
	tok, sent, err := requestSession(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	params, err := queryParams(r, "consistency")
	if err != nil {
		s.fail(w, r, tok, err)
		return
	}
	body, err := readBody(w, r, maxQueryBody, fmt.Errorf("%w: the query body is limited to %d bytes", lambda.ErrRequestTooLarge, maxQueryBody))
	if err != nil {
		s.fail(w, r, tok, err)
		return
	}
	var req queryRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		s.fail(w, r, tok, fmt.Errorf("%w: %v", scatter.ErrInvalidQuery, err))
		return
	}
	if dec.More() {
		s.fail(w, r, tok, fmt.Errorf("%w: trailing data after the JSON object", scatter.ErrInvalidQuery))
		return
	}
	if req.Consistency != "" {
		params.Set("consistency", req.Consistency) // the body's wins
	}
	ro, err := readOptions(params, tok, sent)
	if err != nil {
		s.fail(w, r, tok, err)
		return
	}
	if req.TimeoutMS < 0 || req.TimeoutMS > scatter.MaxQueryTimeout.Milliseconds() {
		s.fail(w, r, tok, fmt.Errorf("%w: timeout_ms %d outside 0..%d", scatter.ErrInvalidQuery, req.TimeoutMS, scatter.MaxQueryTimeout.Milliseconds()))
		return
	}
	ns := namespace.From(r.Context())
	fn := req.Function
	if fn != "" {
		// A user names a function of its own namespace only.
		if err := lambda.ValidateName(fn); err != nil {
			s.fail(w, r, tok, err)
			return
		}
		fn = namespace.Name(ns, fn)
	}
	q := scatter.Query{
		Prefix: req.Prefix, Start: req.Start, End: req.End, Namespace: ns, Aggregate: req.Aggregate, Function: fn,
		FunctionVersion: req.FunctionVersion,
		Consistency:     ro.Consistency, Session: tok, Timeout: time.Duration(req.TimeoutMS) * time.Millisecond,
	}
	if q.Aggregate != nil && q.Function == "" && q.Aggregate.Op == "" {
		s.fail(w, r, tok, fmt.Errorf("%w: aggregate needs an op", scatter.ErrInvalidQuery))
		return
	}
	res, err := s.query.Run(r.Context(), q)
	if err != nil {
		s.fail(w, r, tok, err)
		return
	}
	out := queryResponse{Result: res.Result, Stats: res.Stats}
	if q.Function != "" {
		// A function's output is embedded as JSON when it is JSON, else
		// as a base64 string.
		if len(res.Raw) > 0 && json.Valid(res.Raw) {
			out.Result = json.RawMessage(res.Raw)
		} else {
			out.Result = append([]byte{}, res.Raw...) // base64; "" when empty
		}
	}
	setSession(w, tok)
	writeJSON(w, http.StatusOK, out)
}
