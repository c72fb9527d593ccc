package console

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"lambdadb/changefeed"
)

// Triggers is what the triggers page reads and does, for the request's
// namespace and principal; package server implements it with the same
// code as the /v1/triggers API (so the page's numbers are the API's).
type Triggers interface {
	// List returns the namespace's triggers as GET /v1/triggers answers
	// them.
	List(r *http.Request) ([]TriggerStatus, error)
	// DeadLetters lists trigger name's dead letters (user keys).
	DeadLetters(r *http.Request, name string) ([]changefeed.DeadLetter, error)
	// Replay replays dead letter id (POST .../dead/{id}/replay); with id
	// "" every one of them (POST .../dead/replay).
	Replay(r *http.Request, name, id string) ([]changefeed.ReplayResult, error)
	// Drop deletes dead letter id.
	Drop(r *http.Request, name, id string) error
	// Pause and Resume pause and resume the trigger (resume from its
	// checkpoint).
	Pause(r *http.Request, name string) error
	Resume(r *http.Request, name string) error
}

// TriggerStatus is one trigger as GET /v1/triggers/{name} answers it.
type TriggerStatus struct {
	Name              string         `json:"name"`
	Function          string         `json:"function"`
	Prefix            string         `json:"prefix"`
	Events            []string       `json:"events"`
	State             string         `json:"state"`
	PausedSince       *time.Time     `json:"paused_since"`
	PausedReason      string         `json:"paused_reason"`
	CheckpointExpired string         `json:"checkpoint_expired"`
	Delivered         uint64         `json:"delivered"`
	Invocations       uint64         `json:"invocations"`
	Retries           uint64         `json:"retries"`
	DeadLetters       uint64         `json:"dead_letters"`
	Lag               uint64         `json:"lag"`
	IteratorAgeMS     int64          `json:"iterator_age_ms"`
	Shards            []TriggerShard `json:"shards"`
}

// TriggerShard is a trigger's progress on one shard.
type TriggerShard struct {
	Shard         int    `json:"shard"`
	Node          string `json:"node"`
	Running       bool   `json:"running"`
	Position      uint64 `json:"position"`
	Checkpoint    uint64 `json:"checkpoint"`
	Lag           uint64 `json:"lag"`
	IteratorAgeMS int64  `json:"iterator_age_ms"`
	Delivered     uint64 `json:"delivered"`
	Invocations   uint64 `json:"invocations"`
	Retries       uint64 `json:"retries"`
	DeadLetters   uint64 `json:"dead_letters"`
	DeadStreak    uint64 `json:"dead_streak"`
	LastError     string `json:"last_error"`
}

// Error is an error with the HTTP status a page answers it with (the
// API's for the same failure).
type Error struct {
	Status int
	Err    error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// statusOf returns err's status (500 when it carries none).
func statusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return http.StatusInternalServerError
}

// TriggerActions maps the patterns of the triggers page's buttons (POST
// forms) to their actions; package server mounts each under a route
// whose policy asks the same scopes as the API's action.
var TriggerActions = map[string]string{
	"POST " + Prefix + "triggers/{name}/dead/{id}/replay": "replay",
	"POST " + Prefix + "triggers/{name}/dead/replay":      "replay",
	"POST " + Prefix + "triggers/{name}/dead/{id}/drop":   "drop",
	"POST " + Prefix + "triggers/{name}/pause":            "pause",
	"POST " + Prefix + "triggers/{name}/resume":           "resume",
}

// maxLettersShown bounds the dead letters listed per trigger.
const maxLettersShown = 100

type triggersView struct {
	Page     page
	Enabled  bool
	Notice   string // the outcome of an action
	Problem  string // an action's failure
	Live     triggersLive
	Replayed []changefeed.ReplayResult
}

type triggersLive struct {
	Node     string
	Time     string
	Error    string
	Triggers []triggerItem
}

type triggerItem struct {
	TriggerStatus
	Age     string
	Paused  bool
	Shards  []shardItem
	Letters []changefeed.DeadLetter
	More    int // letters not listed
	LetErr  string
}

type shardItem struct {
	TriggerShard
	Age string
}

// age renders an iterator age.
func age(ms int64) string {
	if ms <= 0 {
		return "—"
	}
	return (time.Duration(ms) * time.Millisecond).Round(100 * time.Millisecond).String()
}

// triggersData reads the namespace's triggers, their status and dead
// letters.
func (c *Console) triggersData(r *http.Request) (triggersLive, int) {
	v := triggersLive{Node: c.node.ID(), Time: time.Now().UTC().Format("15:04:05 UTC")}
	list, err := c.triggers.List(r)
	if err != nil {
		v.Error = err.Error()
		return v, statusOf(err)
	}
	for _, t := range list {
		it := triggerItem{TriggerStatus: t, Age: age(t.IteratorAgeMS), Paused: t.State == changefeed.StatePaused}
		for _, sh := range t.Shards {
			it.Shards = append(it.Shards, shardItem{TriggerShard: sh, Age: age(sh.IteratorAgeMS)})
		}
		dl, err := c.triggers.DeadLetters(r, t.Name)
		if err != nil {
			it.LetErr = err.Error()
		}
		if len(dl) > maxLettersShown {
			it.More = len(dl) - maxLettersShown
			dl = dl[:maxLettersShown]
		}
		it.Letters = dl
		v.Triggers = append(v.Triggers, it)
	}
	return v, http.StatusOK
}

func (c *Console) triggersPage(w http.ResponseWriter, r *http.Request) {
	c.renderTriggers(w, r, http.StatusOK, triggersView{})
}

// renderTriggers renders the page with v's notice or problem; status is
// the action's (the page's own when it fails to read).
func (c *Console) renderTriggers(w http.ResponseWriter, r *http.Request, status int, v triggersView) {
	v.Page = c.pageOf(r, "Triggers", "triggers")
	v.Enabled = c.triggers != nil
	if v.Enabled {
		var st int
		v.Live, st = c.triggersData(r)
		if st != http.StatusOK && status == http.StatusOK {
			status = st
		}
	}
	c.render(w, r, status, "triggers.html", v)
}

// triggersFragment is the live part of the page, polled by htmx.
func (c *Console) triggersFragment(w http.ResponseWriter, r *http.Request) {
	if c.triggers == nil {
		http.Error(w, "triggers are not enabled on this node", http.StatusNotFound)
		return
	}
	v, st := c.triggersData(r)
	c.render(w, r, st, "triggers-live", v)
}

// triggerAction serves the page's buttons (POST): it runs action
// (replay, drop, pause or resume) through Config.Triggers and renders the
// page with its outcome.
func (c *Console) triggerAction(action string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { c.act(w, r, action) }
}

func (c *Console) act(w http.ResponseWriter, r *http.Request, action string) {
	if c.triggers == nil {
		http.Error(w, "triggers are not enabled on this node", http.StatusNotFound)
		return
	}
	name, id := r.PathValue("name"), r.PathValue("id")
	var v triggersView
	var err error
	switch action {
	case "replay":
		var res []changefeed.ReplayResult
		res, err = c.triggers.Replay(r, name, id)
		if err == nil {
			delivered, failed := 0, 0
			for _, x := range res {
				if x.Delivered {
					delivered++
				} else {
					failed++
					v.Replayed = append(v.Replayed, x)
				}
			}
			switch {
			case id != "" && delivered == 1:
				v.Notice = fmt.Sprintf("Dead letter %s of trigger %s replayed: the handler took it.", id, name)
			case id != "":
				v.Problem = fmt.Sprintf("Dead letter %s of trigger %s replayed, and the handler failed again; it stays.", id, name)
			case failed == 0:
				v.Notice = fmt.Sprintf("Replayed %d dead letters of trigger %s: the handler took them all.", delivered, name)
			default:
				v.Problem = fmt.Sprintf("Replayed %d dead letters of trigger %s: %d delivered, %d failed again and stay.", delivered+failed, name, delivered, failed)
			}
		}
	case "drop":
		if err = c.triggers.Drop(r, name, id); err == nil {
			v.Notice = fmt.Sprintf("Dead letter %s of trigger %s dropped.", id, name)
		}
	case "pause":
		if err = c.triggers.Pause(r, name); err == nil {
			v.Notice = fmt.Sprintf("Trigger %s paused.", name)
		}
	case "resume":
		if err = c.triggers.Resume(r, name); err == nil {
			v.Notice = fmt.Sprintf("Trigger %s resumed from its checkpoints.", name)
		}
	default:
		http.NotFound(w, r)
		return
	}
	status := http.StatusOK
	if err != nil {
		v.Problem, status = err.Error(), statusOf(err)
	}
	c.renderTriggers(w, r, status, v)
}
