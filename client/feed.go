package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Change is one committed change from the feed.
type Change struct {
	Key     string `json:"key"`
	Value   []byte `json:"value"` // nil for a delete
	Op      string `json:"op"`    // "put" or "delete"
	Version uint64 `json:"version"`
	Shard   int    `json:"shard"`
	Time    string `json:"time,omitempty"`
}

// FeedPage is one read of the change feed.
type FeedPage struct {
	Changes []Change `json:"changes"`
	// Cursor continues the feed after these changes.
	Cursor string `json:"cursor"`
}

// Feed cursors with special meaning.
const (
	CursorNow       = "now"       // only changes from now on
	CursorBeginning = "beginning" // every change the feed retains
)

// Feed reads the changes after cursor (a Cursor from an earlier page,
// CursorNow or CursorBeginning) to keys starting with prefix, waiting up
// to wait for the first. An expired cursor is an *Error with status 410.
func (c *Client) Feed(ctx context.Context, prefix, cursor string, wait time.Duration, limit int) (FeedPage, error) {
	q := url.Values{}
	if prefix != "" {
		q.Set("prefix", prefix)
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	if wait > 0 {
		q.Set("wait", wait.String())
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var p FeedPage
	_, err := c.doJSON(ctx, http.MethodGet, "/v1/feed", q, nil, nil, &p)
	return p, err
}
