package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Aggregate operations for Aggregate.Op.
const (
	OpCount = "count" // records (with a numeric Field, when Field is set)
	OpSum   = "sum"
	OpMin   = "min"
	OpMax   = "max"
	OpAvg   = "avg"
	OpTopK  = "topk" // the K records with the largest Field
)

// Aggregate is a built-in aggregate of a query: Op over the top-level
// numeric Field of the JSON object values, per value of the top-level
// GroupBy field when it is set. Values that are not JSON objects are
// skipped; objects without a numeric Field are counted in
// QueryStats.RecordsWithoutField.
type Aggregate struct {
	Op      string `json:"op"`
	Field   string `json:"field,omitempty"`    // required except for count
	GroupBy string `json:"group_by,omitempty"` // "" = one group
	K       int    `json:"k,omitempty"`        // topk: how many, 1..10000 (required)
}

// QueryRequest is a scatter/gather query over the keys that begin with
// Prefix and lie in [Start, End): either a built-in Aggregate or a
// deployed Function exporting Leaf and Combine, not both.
type QueryRequest struct {
	Prefix string
	Start  string // first key (inclusive); "" = from the prefix
	End    string // end key (exclusive); "" = to the end of the prefix

	Aggregate *Aggregate
	Function  string
	// FunctionVersion pins the Function's deploy (FunctionInfo.Version);
	// 0 = the version current when the query starts. Either way every
	// leaf and combine runs that one version, and a redeploy while the
	// query runs fails it with 409 conflict.
	FunctionVersion uint64

	// Consistency of each shard's read; "" lets the server choose
	// (session when the Client holds a token, else linearizable).
	Consistency Consistency
	// Timeout bounds the query on the server (rounded up to whole
	// milliseconds); 0 = the server's default (2 minutes).
	Timeout time.Duration
}

// QueryResponse is a finished query.
//
// Result is, for an Aggregate without GroupBy, a number (count, sum), a
// number or null (min, max, avg of no numbers) or a list of TopItem
// (topk); with GroupBy, a list of Group, each group's value typed as in
// the records (`"eu"`, `1`, `null` for records without the field) with
// such a value — decode it with Groups. For a Function it is the root
// Combine's output when that is valid JSON, else that output as a base64
// JSON string.
type QueryResponse struct {
	Result json.RawMessage `json:"result"`
	Stats  QueryStats      `json:"stats"`
}

// Group is one group of a GroupBy answer:
// {"group":"eu","value":30.5}. Groups come numbers first (by value), then
// every other value by its JSON text, then null.
type Group struct {
	// Group is the group_by value as JSON, in canonical form: "eu", 1,
	// true, {"a":1}, or null for records without the field.
	Group json.RawMessage `json:"group"`
	// Value is the aggregate over the group's records: a number, null, or
	// a topk list (decode it into []TopItem).
	Value json.RawMessage `json:"value"`
}

// Name is the group's value as text: a JSON string's text, else the JSON
// itself ("1", "true", "null").
func (g Group) Name() string {
	var s string
	if json.Unmarshal(g.Group, &s) == nil {
		return s
	}
	return string(g.Group)
}

// Groups decodes the Result of a GroupBy aggregate.
func (r *QueryResponse) Groups() ([]Group, error) {
	var gs []Group
	if err := json.Unmarshal(r.Result, &gs); err != nil {
		return nil, fmt.Errorf("client: the result is not a group_by answer: %w", err)
	}
	return gs, nil
}

// TopItem is one entry of a topk result.
type TopItem struct {
	Key   string  `json:"key"`
	Value float64 `json:"value"`
}

// QueryStats describe how a query ran.
type QueryStats struct {
	Shards int `json:"shards"`
	Nodes  int `json:"nodes"`  // nodes that ran leaves or combines
	Levels int `json:"levels"` // levels of the tree, leaves included
	// RecordsScanned counts the records read; RecordsSkipped those that
	// were not JSON objects and RecordsWithoutField the objects without a
	// numeric field (built-in aggregates only).
	RecordsScanned      uint64  `json:"records_scanned"`
	RecordsSkipped      uint64  `json:"records_skipped"`
	RecordsWithoutField uint64  `json:"records_without_field"`
	BytesScanned        uint64  `json:"bytes_scanned"`  // keys and values read
	BytesGathered       uint64  `json:"bytes_gathered"` // partial results sent between nodes
	ElapsedMS           float64 `json:"elapsed_ms"`
	// FunctionVersion is the deploy a function query ran.
	FunctionVersion uint64 `json:"function_version,omitempty"`
	// Retries counts leaves started again after a failure; Hedges those
	// also started elsewhere because they were slow.
	Retries  int          `json:"retries"`
	Hedges   int          `json:"hedges"`
	PerLevel []QueryLevel `json:"per_level"`
	PerShard []QueryShard `json:"per_shard"` // in shard order
}

// Elapsed is ElapsedMS as a duration.
func (s QueryStats) Elapsed() time.Duration {
	return time.Duration(s.ElapsedMS * float64(time.Millisecond))
}

// QueryLevel is one level of the query's tree: 0 is the leaves, the last
// the root combine.
type QueryLevel struct {
	Level int    `json:"level"`
	Kind  string `json:"kind"` // "leaf", "combine" or "root"
	Count int    `json:"count"`
	// MaxMS is the slowest member's wall time; CombineMS the slowest
	// member's time merging its inputs.
	MaxMS     float64 `json:"max_ms"`
	CombineMS float64 `json:"combine_ms,omitempty"`
}

// QueryShard is the leaf that read one shard.
type QueryShard struct {
	Shard        int     `json:"shard"`
	Node         string  `json:"node"`
	AppliedIndex uint64  `json:"applied_index"` // the shard's Raft index the leaf read at
	Records      uint64  `json:"records"`
	Bytes        uint64  `json:"bytes"`
	MS           float64 `json:"ms"`
}

// Query runs a scatter/gather query (POST /v1/query). A query never
// returns a partial answer: when some shards cannot be read the error is
// an *Error with Code "incomplete" and MissingShards set.
func (c *Client) Query(ctx context.Context, q QueryRequest) (QueryResponse, error) {
	if q.Timeout < 0 {
		return QueryResponse{}, errors.New("client: Query: negative Timeout")
	}
	timeoutMS := int64(q.Timeout / time.Millisecond)
	if q.Timeout%time.Millisecond != 0 {
		timeoutMS++
	}
	body, err := json.Marshal(struct {
		Prefix      string     `json:"prefix,omitempty"`
		Start       string     `json:"start,omitempty"`
		End         string     `json:"end,omitempty"`
		Aggregate   *Aggregate `json:"aggregate,omitempty"`
		Function    string     `json:"function,omitempty"`
		Version     uint64     `json:"function_version,omitempty"`
		Consistency string     `json:"consistency,omitempty"`
		TimeoutMS   int64      `json:"timeout_ms,omitempty"`
	}{q.Prefix, q.Start, q.End, q.Aggregate, q.Function, q.FunctionVersion, string(q.Consistency), timeoutMS})
	if err != nil {
		return QueryResponse{}, err
	}
	var out QueryResponse
	_, err = c.doJSON(ctx, http.MethodPost, "/v1/query", nil, body, func(h http.Header) {
		h.Set("Content-Type", "application/json")
	}, &out)
	return out, err
}
