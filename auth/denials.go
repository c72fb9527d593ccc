package auth

import (
	"sync"
	"time"
)

// Denial is one refused request, as the denial log keeps it: who (by
// accessor, never a secret), what and why.
type Denial struct {
	Time      time.Time `json:"time"`
	Accessor  string    `json:"accessor,omitempty"` // "" when no valid token was shown
	Namespace string    `json:"namespace,omitempty"`
	Route     string    `json:"route"`
	Status    int       `json:"status"`
	Reason    string    `json:"reason"`
	Remote    string    `json:"remote"`
}

// Denials keeps the most recent denials of a node in a ring.
type Denials struct {
	mu    sync.Mutex
	ring  []Denial
	next  int
	full  bool
	total uint64
}

// NewDenials returns a log keeping the last n denials (default 256).
func NewDenials(n int) *Denials {
	if n <= 0 {
		n = 256
	}
	return &Denials{ring: make([]Denial, n)}
}

// Add records d.
func (l *Denials) Add(d Denial) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.ring[l.next] = d
	l.next = (l.next + 1) % len(l.ring)
	l.full = l.full || l.next == 0
	l.total++
}

// List returns the denials kept, newest first, and how many there have
// been since the node started.
func (l *Denials) List() ([]Denial, uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := l.next
	if l.full {
		n = len(l.ring)
	}
	out := make([]Denial, 0, n)
	for i := 1; i <= n; i++ {
		out = append(out, l.ring[(l.next-i+len(l.ring))%len(l.ring)])
	}
	return out, l.total
}
