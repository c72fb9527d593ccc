package client

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"time"
)

// Trigger binds a function's OnChanges to changes under a prefix.
type Trigger struct {
	Name     string   `json:"name,omitempty"`
	Function string   `json:"function"`
	Prefix   string   `json:"prefix"`
	Events   []string `json:"events,omitempty"`
	// BatchSize, MaxWaitMS, MaxRetries and PauseAfter: nil leaves the
	// server's default (100, 200, 5, and the node's --trigger-pause-after,
	// 100 by default) when creating; 0 is a value (deliver at once, never
	// retry, never pause; a batch size of 0 is refused). Read back, they
	// are set.
	BatchSize  *int      `json:"batch_size,omitempty"`
	MaxWaitMS  *int      `json:"max_wait_ms,omitempty"`
	MaxRetries *int      `json:"max_retries,omitempty"`
	PauseAfter *int      `json:"pause_after,omitempty"`
	Start      string    `json:"start,omitempty"` // "now" (default) or "beginning"
	Version    uint64    `json:"version,omitempty"`
	CreatedAt  time.Time `json:"created_at,omitempty"`

	// State is "running" or "paused" (read back). A paused trigger
	// delivers nothing until ResumeTrigger; PausedSince and PausedReason
	// say since when and why, and CheckpointExpired, when set, says which
	// changes the feed trimmed while it was paused.
	State             string     `json:"state,omitempty"`
	PausedSince       *time.Time `json:"paused_since,omitempty"`
	PausedReason      string     `json:"paused_reason,omitempty"`
	CheckpointExpired string     `json:"checkpoint_expired,omitempty"`

	// Status, when read back.
	Shards      []TriggerShard `json:"shards,omitempty"`
	Delivered   uint64         `json:"delivered,omitempty"`
	Invocations uint64         `json:"invocations,omitempty"`
	Retries     uint64         `json:"retries,omitempty"`
	DeadLetters uint64         `json:"dead_letters,omitempty"`
	Lag         uint64         `json:"lag,omitempty"`
	// IteratorAgeMS is the largest of the shards' iterator ages.
	IteratorAgeMS int64 `json:"iterator_age_ms,omitempty"`
}

// TriggerShard is a trigger's progress on one shard.
type TriggerShard struct {
	Shard       int    `json:"shard"`
	Node        string `json:"node"`
	Running     bool   `json:"running"`
	Position    uint64 `json:"position"`
	Checkpoint  uint64 `json:"checkpoint"`
	Lag         uint64 `json:"lag"`
	Delivered   uint64 `json:"delivered"`
	Invocations uint64 `json:"invocations"`
	Retries     uint64 `json:"retries"`
	DeadLetters uint64 `json:"dead_letters"`
	Atomic      uint64 `json:"atomic_batches"`
	DeadStreak  uint64 `json:"dead_streak"` // dead letters since the last delivery
	LastError   string `json:"last_error,omitempty"`
	// IteratorAgeMS is the age of the oldest change not delivered yet on
	// the shard (0: none waiting).
	IteratorAgeMS int64 `json:"iterator_age_ms"`
}

// DeadLetter is a change a trigger gave up on.
type DeadLetter struct {
	// ID names the letter for ReplayDeadLetter and DropDeadLetter.
	ID      string    `json:"id"`
	Shard   int       `json:"shard"`
	Key     string    `json:"key"`
	Op      string    `json:"op"`
	Version uint64    `json:"version"`
	Value   []byte    `json:"value"`
	Error   string    `json:"error"`
	Time    time.Time `json:"time"`
	// Replays counts the replays that failed again.
	Replays int `json:"replays"`
}

// Int returns a pointer to v, for Trigger's optional settings.
func Int(v int) *int { return &v }

// CreateTrigger creates (or replaces) trigger name.
func (c *Client) CreateTrigger(ctx context.Context, name string, t Trigger) (Trigger, error) {
	t.Name, t.Version, t.CreatedAt = "", 0, time.Time{}
	body, err := json.Marshal(struct {
		Function   string   `json:"function"`
		Prefix     string   `json:"prefix"`
		Events     []string `json:"events,omitempty"`
		BatchSize  *int     `json:"batch_size,omitempty"`
		MaxWaitMS  *int     `json:"max_wait_ms,omitempty"`
		MaxRetries *int     `json:"max_retries,omitempty"`
		PauseAfter *int     `json:"pause_after,omitempty"`
		Start      string   `json:"start,omitempty"`
	}{t.Function, t.Prefix, t.Events, t.BatchSize, t.MaxWaitMS, t.MaxRetries, t.PauseAfter, t.Start})
	if err != nil {
		return Trigger{}, err
	}
	var out Trigger
	_, err = c.doJSON(ctx, http.MethodPut, "/v1/triggers/"+url.PathEscape(name), nil, body, nil, &out)
	return out, err
}

// Triggers lists every trigger with its status.
func (c *Client) Triggers(ctx context.Context) ([]Trigger, error) {
	var out struct {
		Triggers []Trigger `json:"triggers"`
	}
	_, err := c.doJSON(ctx, http.MethodGet, "/v1/triggers", nil, nil, nil, &out)
	return out.Triggers, err
}

// TriggerStatus returns one trigger with its per-shard status.
func (c *Client) TriggerStatus(ctx context.Context, name string) (Trigger, error) {
	var out Trigger
	_, err := c.doJSON(ctx, http.MethodGet, "/v1/triggers/"+url.PathEscape(name), nil, nil, nil, &out)
	return out, err
}

// DeleteTrigger deletes a trigger.
func (c *Client) DeleteTrigger(ctx context.Context, name string) error {
	var out struct{}
	_, err := c.doJSON(ctx, http.MethodDelete, "/v1/triggers/"+url.PathEscape(name), nil, nil, nil, &out)
	return err
}

// DeadLetters lists a trigger's dead letters.
func (c *Client) DeadLetters(ctx context.Context, name string) ([]DeadLetter, error) {
	var out struct {
		Dead []DeadLetter `json:"dead"`
	}
	_, err := c.doJSON(ctx, http.MethodGet, "/v1/triggers/"+url.PathEscape(name)+"/dead", nil, nil, nil, &out)
	return out.Dead, err
}

// ReplayResult is the outcome of replaying one dead letter.
type ReplayResult struct {
	ID string `json:"id"`
	// Delivered: the handler took the change; the letter is gone.
	Delivered bool `json:"delivered"`
	// Error is the handler's error when it failed again; Dead is the
	// letter as it stays.
	Error string      `json:"error,omitempty"`
	Dead  *DeadLetter `json:"dead,omitempty"`
}

// ReplayAllResult is the outcome of ReplayDeadLetters.
type ReplayAllResult struct {
	Delivered int            `json:"delivered"`
	Failed    int            `json:"failed"`
	Replayed  []ReplayResult `json:"replayed"`
}

// ReplayDeadLetter delivers dead letter id's change to the trigger's
// function now. A handler that fails again is not an error: the result
// says so and the letter stays. A letter or trigger not found is an
// error (status 404).
func (c *Client) ReplayDeadLetter(ctx context.Context, name, id string) (ReplayResult, error) {
	var out ReplayResult
	_, err := c.doJSON(ctx, http.MethodPost, "/v1/triggers/"+url.PathEscape(name)+"/dead/"+url.PathEscape(id)+"/replay", nil, nil, nil, &out)
	return out, err
}

// ReplayDeadLetters replays every dead letter of a trigger in turn.
func (c *Client) ReplayDeadLetters(ctx context.Context, name string) (ReplayAllResult, error) {
	var out ReplayAllResult
	_, err := c.doJSON(ctx, http.MethodPost, "/v1/triggers/"+url.PathEscape(name)+"/dead/replay", nil, nil, nil, &out)
	return out, err
}

// DropDeadLetter deletes a dead letter without delivering its change.
func (c *Client) DropDeadLetter(ctx context.Context, name, id string) error {
	var out struct{}
	_, err := c.doJSON(ctx, http.MethodDelete, "/v1/triggers/"+url.PathEscape(name)+"/dead/"+url.PathEscape(id), nil, nil, nil, &out)
	return err
}

// Where ResumeTrigger starts each shard of a paused trigger.
const (
	// ResumeFromCheckpoint goes on from the trigger's checkpoints. When the
	// change feed was trimmed past one while the trigger was paused, the
	// resume fails with status 410 (code "cursor_expired", the message
	// naming the trimmed changes) and the trigger stays paused.
	ResumeFromCheckpoint = "checkpoint"
	// ResumeFromNow skips every change up to now.
	ResumeFromNow = "now"
	// ResumeFromBeginning goes on from the checkpoint where the feed still
	// holds it, else from the oldest change it holds: only what was
	// trimmed is skipped.
	ResumeFromBeginning = "beginning"
)

// PauseTrigger pauses a trigger: it delivers nothing until resumed.
// Pausing a paused trigger changes nothing.
func (c *Client) PauseTrigger(ctx context.Context, name string) (Trigger, error) {
	var out Trigger
	_, err := c.doJSON(ctx, http.MethodPost, "/v1/triggers/"+url.PathEscape(name)+"/pause", nil, nil, nil, &out)
	return out, err
}

// ResumeTrigger resumes a paused trigger from where from says
// (ResumeFromCheckpoint when empty). Moving the checkpoints of a running
// trigger (from now or beginning) fails with status 409 (code
// "not_paused").
func (c *Client) ResumeTrigger(ctx context.Context, name, from string) (Trigger, error) {
	var q url.Values
	if from != "" {
		q = url.Values{"from": {from}}
	}
	var out Trigger
	_, err := c.doJSON(ctx, http.MethodPost, "/v1/triggers/"+url.PathEscape(name)+"/resume", q, nil, nil, &out)
	return out, err
}
