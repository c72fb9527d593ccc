package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	"lambdadb/scatter"
)

// QueryFunc runs body, a POST /v1/query body, for the request's namespace
// and principal, as the API does, and returns the API's status and JSON
// answer (the result and stats, or the error).
type QueryFunc func(r *http.Request, body []byte) (status int, answer []byte)

// Aggregates the query page offers (scatter's built-ins).
var queryOps = []string{scatter.OpCount, scatter.OpSum, scatter.OpAvg, scatter.OpMin, scatter.OpMax, scatter.OpTopK}

type queryView struct {
	Page        page
	Enabled     bool
	Ops         []string
	Op          string
	Prefix      string
	Start       string
	End         string
	Field       string
	GroupBy     string
	K           string
	Consistency string
	Levels      []string // the consistency choices ("": the API's default)
	TimeoutMS   string

	Ran     bool
	Error   string
	Code    string
	Scalar  string // the result when it is one JSON value that is not an object or array
	Table   *resultTable
	Result  string // the result, indented JSON
	Stats   *scatter.Stats
	Request string // the API request body the page sent
}

// queryPage shows the form and, with op given, runs the query through
// Config.Query and shows its result and statistics.
func (c *Console) queryPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	v := queryView{Page: c.pageOf(r, "Query", "query"), Enabled: c.query != nil, Ops: queryOps, Op: q.Get("op"),
		Prefix: q.Get("prefix"), Start: q.Get("start"), End: q.Get("end"), Field: q.Get("field"), GroupBy: q.Get("group_by"),
		K: q.Get("k"), Consistency: q.Get("consistency"), Levels: []string{"", "session", "stale"}, TimeoutMS: q.Get("timeout_ms")}
	if v.Op == "" || c.query == nil {
		c.render(w, r, http.StatusOK, "query.html", v)
		return
	}
	v.Ran = true
	body, err := v.body()
	if err != nil {
		v.Error, v.Code = err.Error(), "invalid_query"
		c.render(w, r, http.StatusBadRequest, "query.html", v)
		return
	}
	v.Request = string(body)
	status, answer := c.query(r, body)
	if status != http.StatusOK {
		var e struct {
			Error string `json:"error"`
			Code  string `json:"code"`
		}
		if json.Unmarshal(answer, &e) != nil || e.Error == "" {
			e.Error = fmt.Sprintf("the query failed with status %d", status)
		}
		v.Error, v.Code = e.Error, e.Code
		c.render(w, r, status, "query.html", v)
		return
	}
	var res struct {
		Result json.RawMessage `json:"result"`
		Stats  scatter.Stats   `json:"stats"`
	}
	if err := json.Unmarshal(answer, &res); err != nil {
		v.Error = "unreadable answer: " + err.Error()
		c.render(w, r, http.StatusInternalServerError, "query.html", v)
		return
	}
	v.Stats = &res.Stats
	var out bytes.Buffer
	if json.Indent(&out, res.Result, "", "  ") == nil {
		v.Result = out.String()
	} else {
		v.Result = string(res.Result)
	}
	if t := bytes.TrimSpace(res.Result); len(t) > 0 && t[0] != '{' && t[0] != '[' {
		v.Scalar = string(t)
	}
	v.Table = tableOf(res.Result)
	c.render(w, r, http.StatusOK, "query.html", v)
}

// resultTable is a result that is a list of objects with the same fields
// (topk's keys and values, group_by's groups and values), shown as a table.
type resultTable struct {
	Columns []string
	Rows    [][]string // each cell a JSON value
}

// tableOf returns result as a table when it is a non-empty JSON array of
// objects whose fields are the same, in the same order; else nil.
func tableOf(result json.RawMessage) *resultTable {
	var rows []json.RawMessage
	if json.Unmarshal(result, &rows) != nil || len(rows) == 0 {
		return nil
	}
	t := &resultTable{}
	for i, raw := range rows {
		cols, vals, ok := objectFields(raw)
		if !ok {
			return nil
		}
		if i == 0 {
			t.Columns = cols
		} else if !slices.Equal(cols, t.Columns) {
			return nil
		}
		t.Rows = append(t.Rows, vals)
	}
	return t
}

// objectFields returns the field names and values (JSON text) of the JSON
// object raw in their order, ok false when raw is not an object.
func objectFields(raw json.RawMessage) (names, vals []string, ok bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil, false
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, false
		}
		name, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, nil, false
		}
		names, vals = append(names, name), append(vals, string(v))
	}
	return names, vals, true
}

// body builds the POST /v1/query body of the form's fields; only what is
// given goes in, so the API's validation judges the rest.
func (v *queryView) body() ([]byte, error) {
	type agg struct {
		Op      string `json:"op"`
		Field   string `json:"field,omitempty"`
		GroupBy string `json:"group_by,omitempty"`
		K       int    `json:"k,omitempty"`
	}
	req := struct {
		Prefix      string `json:"prefix,omitempty"`
		Start       string `json:"start,omitempty"`
		End         string `json:"end,omitempty"`
		Aggregate   agg    `json:"aggregate"`
		Consistency string `json:"consistency,omitempty"`
		TimeoutMS   int64  `json:"timeout_ms,omitempty"`
	}{Prefix: v.Prefix, Start: v.Start, End: v.End, Consistency: v.Consistency,
		Aggregate: agg{Op: v.Op, Field: v.Field, GroupBy: v.GroupBy}}
	if v.K != "" {
		k, err := strconv.Atoi(v.K)
		if err != nil {
			return nil, fmt.Errorf("k %q is not an integer", v.K)
		}
		req.Aggregate.K = k
	} else if v.Op == scatter.OpTopK {
		req.Aggregate.K = 10 // the CLI's default
	}
	if v.TimeoutMS != "" {
		ms, err := strconv.ParseInt(v.TimeoutMS, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("timeout_ms %q is not an integer", v.TimeoutMS)
		}
		req.TimeoutMS = ms
	}
	return json.Marshal(req)
}
