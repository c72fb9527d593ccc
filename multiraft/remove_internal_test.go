package multiraft

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	pb "go.etcd.io/raft/v3/raftpb"

	"lambdadb/kv"
)

// waitUntil polls cond until it holds; the deadline only turns a hang
// into a failure.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// recv returns the next value of ch; the deadline only turns a hang into
// a failure.
func recv[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// testSM is a state machine that only records the applied index; gate,
// when set, is called with each batch before it is applied.
type testSM struct {
	eng     *kv.Engine
	shard   int
	applied atomic.Uint64
	gate    func([]Entry)
}

func (s *testSM) Applied() uint64 { return s.applied.Load() }

func (s *testSM) Apply(ents []Entry, cs *pb.ConfState) {
	if s.gate != nil {
		s.gate(ents)
	}
	last := ents[len(ents)-1]
	if err := s.eng.NewApply(s.shard).CommitRaft(last.Index, last.Term, cs); err != nil {
		panic(err)
	}
	for i := range ents {
		if ents[i].Result == nil {
			ents[i].Result = ents[i].Index
		}
	}
	s.applied.Store(last.Index)
}

func (s *testSM) Restored(index uint64) { s.applied.Store(index) }

// scriptedPeers plays nodes 2 and 3 for node 1's engine: they grant every
// vote, acknowledge the appended entries ack accepts (each entry in order,
// up to the first it refuses), and never answer heartbeats — so reads and
// unacknowledged proposals wait as long as the test wants. They note the
// payloads appended and the read contexts heartbeats carry.
type scriptedPeers struct {
	e   *Engine
	ack func(payload []byte) bool // payload nil: raft's own entry

	mu       sync.Mutex
	queue    []Message
	wake     chan struct{}
	done     chan struct{}
	payloads map[string]bool
	readCtxs map[string]bool
}

func (p *scriptedPeers) Send(to uint64, msgs []Message) {
	p.mu.Lock()
	p.queue = append(p.queue, msgs...)
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

func (p *scriptedPeers) SendSnapshot(to uint64, m Message, data func(io.Writer) error, done func(error)) {
	go done(errors.New("scripted peers take no snapshots"))
}

func (p *scriptedPeers) run() {
	for {
		select {
		case <-p.done:
			return
		case <-p.wake:
		}
		p.mu.Lock()
		q := p.queue
		p.queue = nil
		p.mu.Unlock()
		for _, m := range q {
			p.answer(m)
		}
	}
}

func (p *scriptedPeers) answer(m Message) {
	msg := m.Msg
	reply := func(typ pb.MessageType, index uint64) {
		p.e.Receive([]Message{{Group: m.Group, Msg: &pb.Message{Type: typ.Enum(),
			From: new(msg.GetTo()), To: new(msg.GetFrom()), Term: new(msg.GetTerm()), Index: new(index)}}})
	}
	switch msg.GetType() {
	case pb.MsgPreVote:
		reply(pb.MsgPreVoteResp, 0)
	case pb.MsgVote:
		reply(pb.MsgVoteResp, 0)
	case pb.MsgApp:
		acked := 0
		p.mu.Lock()
		for _, ent := range msg.GetEntries() {
			_, _, payload, ok := decodeEnvelope(ent.GetData())
			if ok {
				p.payloads[string(payload)] = true
			} else {
				payload = nil
			}
			if acked == len(msg.GetEntries()) || !p.ack(payload) {
				break
			}
			acked++
		}
		p.mu.Unlock()
		if acked > 0 {
			reply(pb.MsgAppResp, msg.GetIndex()+uint64(acked))
		}
	case pb.MsgHeartbeat:
		if len(msg.GetContext()) > 0 {
			p.mu.Lock()
			p.readCtxs[string(msg.GetContext())] = true
			p.mu.Unlock()
		}
	}
}

// appended reports whether an entry with payload was sent to the peers.
func (p *scriptedPeers) appended(payload string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.payloads[payload]
}

// readRounds returns how many read contexts the peers were asked to confirm.
func (p *scriptedPeers) readRounds() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.readCtxs)
}

// scripted is node 1 leading group 0 of voters {1, 2, 3}, with nodes 2 and
// 3 played by scriptedPeers. Ticks are off (an hour apart), so the leader
// never steps down and nothing happens that the test does not cause.
type scripted struct {
	e     *Engine
	peers *scriptedPeers
	sm    *testSM
	st    *kv.Engine
	fs    vfs.FS
}

func newScripted(t *testing.T, ack func([]byte) bool, gate func([]Entry)) *scripted {
	t.Helper()
	fs := vfs.NewMem()
	st, err := kv.Open(kv.Config{Dir: "db", FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	p := &scriptedPeers{ack: ack, wake: make(chan struct{}, 1), done: make(chan struct{}),
		payloads: map[string]bool{}, readCtxs: map[string]bool{}}
	e, err := Open(Config{NodeID: 1, Storage: st, Transport: p, FS: fs, SnapshotDir: "snap",
		TickInterval: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	p.e = e
	go p.run()
	t.Cleanup(func() {
		e.Close()
		close(p.done)
		st.Close()
	})
	rs, err := st.RaftStorage(0)
	if err != nil {
		t.Fatal(err)
	}
	sm := &testSM{eng: st, shard: 0, gate: gate}
	if err := e.AddGroup(GroupConfig{ID: 0, Storage: rs, SM: sm, Voters: []uint64{1, 2, 3}}); err != nil {
		t.Fatal(err)
	}
	r := groupOf(t, e, 0)
	r.mu.Lock()
	r.campaign = true
	r.mu.Unlock()
	e.sched.enqueue(r)
	waitUntil(t, "node 1 leads and has committed an entry of its term", func() bool {
		st, err := e.Status(0)
		return err == nil && st.IsLeader() && sm.Applied() > bootstrapIndex
	})
	return &scripted{e: e, peers: p, sm: sm, st: st, fs: fs}
}

func groupOf(t *testing.T, e *Engine, id uint64) *replica {
	t.Helper()
	e.mu.RLock()
	defer e.mu.RUnlock()
	r := e.groups[id]
	if r == nil {
		t.Fatalf("no group %d", id)
	}
	return r
}

func ackNothing(payload []byte) bool { return payload == nil }

// wantReleased checks that the engine holds nothing of r any more.
func wantReleased(t *testing.T, e *Engine, r *replica) {
	t.Helper()
	e.mu.RLock()
	if e.groups[r.id] == r || slices.Contains(e.list, r) {
		t.Error("the removed replica is still registered")
	}
	e.mu.RUnlock()
	e.sched.mu.Lock()
	if r.sched.processing {
		t.Error("a worker is processing the removed replica")
	}
	e.sched.mu.Unlock()
	e.w.mu.Lock()
	for _, it := range e.w.queue {
		if it.r == r {
			t.Error("the log writer holds a write of the removed replica")
		}
	}
	if slices.Contains(e.w.inflight, r) {
		t.Error("a write of the removed replica is in flight")
	}
	e.w.mu.Unlock()
	r.mu.Lock()
	if len(r.inbox)+r.ticks+len(r.props)+len(r.newReads)+len(r.progress)+len(r.staged) > 0 {
		t.Errorf("the removed replica's inbox holds work: %d messages, %d ticks, %d proposals, %d reads, %d progress, %d staged",
			len(r.inbox), r.ticks, len(r.props), len(r.newReads), len(r.progress), len(r.staged))
	}
	r.mu.Unlock()
	if len(r.waiting)+len(r.byIndex)+len(r.reads) > 0 {
		t.Errorf("the removed replica has waiters: %d proposals, %d reads", len(r.waiting), len(r.reads))
	}
}

// TestRemoveGroupFailsWaiters: proposals raft has taken and reads waiting
// for their confirmation fail with ErrRemoved once RemoveGroup returns
// (a proposal not with ErrDropped: it was appended and may commit
// elsewhere), a staged snapshot is deleted, every later call fails with
// ErrNoGroup, and the group can be added again on emptied storage.
func TestRemoveGroupFailsWaiters(t *testing.T) {
	s := newScripted(t, ackNothing, nil)
	e := s.e
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	type result struct {
		what string
		err  error
	}
	results := make(chan result, 16)
	const n = 4
	for i := range n {
		payload := fmt.Sprintf("p%d", i)
		go func() {
			_, _, err := e.Propose(ctx, 0, []byte(payload))
			results <- result{"proposal " + payload, err}
		}()
		waitUntil(t, "proposal "+payload+" is appended", func() bool { return s.peers.appended(payload) })
	}
	for i := range n {
		go func() {
			_, err := e.ReadIndex(ctx, 0)
			results <- result{fmt.Sprintf("read %d", i), err}
		}()
		waitUntil(t, fmt.Sprintf("read %d is sent for confirmation", i), func() bool { return s.peers.readRounds() == i+1 })
	}
	// A snapshot from an earlier term: raft ignores it, so it stays staged.
	snapMsg := func() Message {
		return Message{Group: 0, Msg: &pb.Message{Type: pb.MsgSnap.Enum(), From: new(uint64(2)), To: new(uint64(1)),
			Term: new(uint64(1)), Snapshot: &pb.Snapshot{Metadata: &pb.SnapshotMetadata{Index: new(uint64(100)), Term: new(uint64(1))}}}}
	}
	// A stream that is not a valid snapshot for its metadata is refused
	// as it arrives, and nothing stays staged.
	if err := e.ReceiveSnapshot(snapMsg(), bytes.NewReader(snapshotStream(t, 99, 1))); !errors.Is(err, kv.ErrBadSnapshot) {
		t.Fatalf("snapshot whose data does not match its metadata: %v, want kv.ErrBadSnapshot", err)
	}
	if names, _ := s.fs.List("snap"); len(names) != 0 {
		t.Fatalf("staged after a bad snapshot: %v", names)
	}
	if err := e.ReceiveSnapshot(snapMsg(), bytes.NewReader(snapshotStream(t, 100, 1))); err != nil {
		t.Fatal(err)
	}
	if names, _ := s.fs.List("snap"); len(names) != 2 {
		t.Fatalf("staged files %v, want one snapshot's two tables", names)
	}
	select {
	case res := <-results:
		t.Fatalf("%s returned before RemoveGroup: %v", res.what, res.err)
	default:
	}

	r := groupOf(t, e, 0)
	if err := e.RemoveGroup(0); err != nil {
		t.Fatal(err)
	}
	for range 2 * n {
		res := recv(t, "a waiter to return", results)
		if !errors.Is(res.err, ErrRemoved) || errors.Is(res.err, ErrDropped) {
			t.Errorf("%s: %v, want ErrRemoved and not ErrDropped", res.what, res.err)
		}
	}
	wantReleased(t, e, r)
	if names, _ := s.fs.List("snap"); len(names) != 0 {
		t.Fatalf("staged snapshots left after RemoveGroup: %v", names)
	}

	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"Propose", func() error { _, _, err := e.Propose(ctx, 0, []byte("x")); return err }},
		{"ChangeMembership", func() error {
			_, _, err := e.ChangeMembership(ctx, 0, &pb.ConfChangeV2{})
			return err
		}},
		{"ReadIndex", func() error { _, err := e.ReadIndex(ctx, 0); return err }},
		{"Progress", func() error { _, _, _, err := e.Progress(ctx, 0); return err }},
		{"Status", func() error { _, err := e.Status(0); return err }},
		{"TransferLeader", func() error { return e.TransferLeader(0, 2) }},
		{"FirstIndex", func() error { _, err := e.FirstIndex(0); return err }},
		{"TruncateLog", func() error { return e.TruncateLog(ctx, 0, 6) }},
		{"ReceiveSnapshot", func() error { return e.ReceiveSnapshot(snapMsg(), strings.NewReader("x")) }},
		{"RemoveGroup", func() error { return e.RemoveGroup(0) }},
	} {
		if err := tc.call(); !errors.Is(err, ErrNoGroup) {
			t.Errorf("%s after RemoveGroup: %v, want ErrNoGroup", tc.name, err)
		}
	}
	// Messages for it are dropped.
	e.Receive([]Message{{Group: 0, Msg: &pb.Message{Type: pb.MsgHeartbeat.Enum(), From: new(uint64(2)), To: new(uint64(1)), Term: new(uint64(50))}}})
	e.ReportUnreachable(2)
	wantReleased(t, e, r)
	if names, _ := s.fs.List("snap"); len(names) != 0 {
		t.Fatalf("staged snapshots after RemoveGroup: %v", names)
	}

	// The group can come back on emptied storage, as a new replica.
	if err := s.st.DropShard(0); err != nil {
		t.Fatal(err)
	}
	rs, err := s.st.RaftStorage(0)
	if err != nil {
		t.Fatal(err)
	}
	sm := &testSM{eng: s.st, shard: 0}
	if err := e.AddGroup(GroupConfig{ID: 0, Storage: rs, SM: sm, Join: true}); err != nil {
		t.Fatal(err)
	}
	if st, err := e.Status(0); err != nil || st.IsLeader() {
		t.Fatalf("re-added replica: %+v, %v", st, err)
	}
}

// TestRemoveGroupWaitsForPass: RemoveGroup waits for a worker's pass over
// the replica to end (here held in the state machine's Apply); calls
// arriving meanwhile fail at once, and work left in the inbox fails when
// it returns — a proposal there with ErrDropped too, as raft never had it.
func TestRemoveGroupWaitsForPass(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	gate := func(ents []Entry) {
		for _, en := range ents {
			if string(en.Data) == "block" {
				once.Do(func() { close(entered) })
				<-release
			}
		}
	}
	s := newScripted(t, func(p []byte) bool { return p == nil || string(p) == "block" }, gate)
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unblock) // before the engine closes, should the test fail
	e := s.e
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	blocked := make(chan error, 1)
	go func() {
		_, _, err := e.Propose(ctx, 0, []byte("block"))
		blocked <- err
	}()
	recv(t, "the apply of the blocking entry", entered)

	// The worker is held in Apply: what arrives now waits in the inbox.
	r := groupOf(t, e, 0)
	type result struct {
		what string
		err  error
	}
	results := make(chan result, 16)
	const n = 3
	for i := range n {
		go func() {
			_, _, err := e.Propose(ctx, 0, fmt.Appendf(nil, "p%d", i))
			results <- result{"proposal", err}
		}()
		go func() {
			_, err := e.ReadIndex(ctx, 0)
			results <- result{"read", err}
		}()
		go func() {
			_, _, _, err := e.Progress(ctx, 0)
			results <- result{"progress", err}
		}()
	}
	waitUntil(t, "the inbox holds every call", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.props) == n && len(r.newReads) == n && len(r.progress) == n
	})

	removed := make(chan error, 1)
	go func() { removed <- e.RemoveGroup(0) }()
	waitUntil(t, "RemoveGroup starts", r.removed.Load)
	_, _, err := e.Propose(ctx, 0, []byte("late"))
	if !errors.Is(err, ErrRemoved) || !errors.Is(err, ErrDropped) {
		t.Fatalf("proposal during RemoveGroup: %v, want ErrRemoved and ErrDropped", err)
	}
	if _, err := e.ReadIndex(ctx, 0); !errors.Is(err, ErrRemoved) {
		t.Fatalf("read during RemoveGroup: %v, want ErrRemoved", err)
	}
	if err := e.ReceiveSnapshot(Message{Group: 0, Msg: &pb.Message{Type: pb.MsgSnap.Enum(), Snapshot: &pb.Snapshot{}}},
		strings.NewReader("x")); !errors.Is(err, ErrNoGroup) {
		t.Fatalf("snapshot during RemoveGroup: %v, want ErrNoGroup", err)
	}
	if err := e.AddGroup(GroupConfig{ID: 0, Storage: r.storage, SM: &testSM{eng: s.st}, Join: true}); err == nil {
		t.Fatal("AddGroup of a group being removed succeeded")
	}
	select {
	case err := <-removed:
		t.Fatalf("RemoveGroup returned (%v) while a worker's pass over the replica ran", err)
	case res := <-results:
		t.Fatalf("%s returned (%v) before the pass ended", res.what, res.err)
	default:
	}

	unblock()
	if err := recv(t, "RemoveGroup", removed); err != nil {
		t.Fatal(err)
	}
	// The entry applied in the pass RemoveGroup waited for got its answer.
	if err := recv(t, "the blocking proposal", blocked); err != nil {
		t.Fatalf("proposal applied before the removal: %v", err)
	}
	for range 3 * n {
		res := recv(t, "a waiter to return", results)
		if !errors.Is(res.err, ErrRemoved) {
			t.Errorf("%s: %v, want ErrRemoved", res.what, res.err)
		}
		if res.what == "proposal" && !errors.Is(res.err, ErrDropped) {
			t.Errorf("proposal never handed to raft: %v, want ErrDropped too", res.err)
		}
	}
	wantReleased(t, e, r)
}

// TestWriterRemove: the log writer discards a removed replica's queued
// items (their waiters told, their staged snapshots deleted), waits for a
// batch in flight holding one, and refuses later ones.
func TestWriterRemove(t *testing.T) {
	fs := vfs.NewMem()
	if err := fs.MkdirAll("snap", 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := fs.Create("snap/staged", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	w := newWriter(&Engine{cfg: Config{FS: fs}}) // not running: the test plays it
	r1, r2 := &replica{id: 1}, &replica{id: 2}
	trunc := make(chan error, 1)
	w.enqueue(writeItem{r: r1, truncate: 3, done: trunc})
	w.enqueue(writeItem{r: r2, truncate: 4})
	w.enqueue(writeItem{r: r1, m: &pb.Message{Snapshot: &pb.Snapshot{Data: []byte("snap/staged"),
		Metadata: &pb.SnapshotMetadata{Index: new(uint64(9))}}}})
	w.mu.Lock()
	w.inflight = append(w.inflight, r2, r1) // a batch holding r1's item is being written
	w.mu.Unlock()

	r1.removed.Store(true)
	got := make(chan []writeItem, 1)
	go func() { got <- w.remove(r1) }()
	waitUntil(t, "r1's queued items are discarded", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return len(w.queue) == 1 && w.queue[0].r == r2
	})
	select {
	case <-got:
		t.Fatal("remove returned while a batch holding the replica's item was in flight")
	default:
	}
	w.settle(false)
	dropped := recv(t, "remove", got)
	if len(dropped) != 2 {
		t.Fatalf("remove discarded %d items, want 2", len(dropped))
	}
	for _, it := range dropped {
		w.release(it)
	}
	if err := recv(t, "the truncation's answer", trunc); !errors.Is(err, ErrRemoved) {
		t.Fatalf("discarded truncation: %v, want ErrRemoved", err)
	}
	if names, _ := fs.List("snap"); len(names) != 0 {
		t.Fatalf("staged snapshot of a discarded install left: %v", names)
	}

	// Later items of r1 are refused and released at once.
	late := make(chan error, 1)
	w.enqueue(writeItem{r: r1, truncate: 5, done: late})
	if err := recv(t, "the refused truncation's answer", late); !errors.Is(err, ErrRemoved) {
		t.Fatalf("truncation of a removed replica: %v, want ErrRemoved", err)
	}
	w.mu.Lock()
	if len(w.queue) != 1 {
		t.Fatalf("queue holds %d items, want r2's one", len(w.queue))
	}
	w.mu.Unlock()

	// A stopped writer has nothing in flight: remove does not wait.
	w.mu.Lock()
	w.inflight = append(w.inflight, r2)
	w.stopped = true
	w.mu.Unlock()
	r2.removed.Store(true)
	if dropped := w.remove(r2); len(dropped) != 1 {
		t.Fatalf("remove on a stopped writer discarded %d items, want 1", len(dropped))
	}
}

// TestSchedulerSkipsRemoved: a removed replica still in the queue is
// skipped, and one removed later is never queued again.
func TestSchedulerSkipsRemoved(t *testing.T) {
	s := newScheduler()
	var mu sync.Mutex
	var order []uint64
	r1, r2, r3 := &replica{id: 1}, &replica{id: 2}, &replica{id: 3}
	s.enqueue(r1)
	s.enqueue(r2)
	r1.removed.Store(true)
	s.remove(r1)
	s.start(1, func(r *replica) {
		mu.Lock()
		order = append(order, r.id)
		mu.Unlock()
	})
	defer s.close()
	waitUntil(t, "r2 is processed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(order) > 0
	})
	r2.removed.Store(true)
	s.remove(r2)
	s.enqueue(r2)
	s.enqueue(r3) // one worker, FIFO: r2 would run before r3
	waitUntil(t, "r3 is processed", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Contains(order, 3)
	})
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(order, []uint64{2, 3}) {
		t.Fatalf("processed %v, want [2 3]", order)
	}
}

// snapshotStream returns a shard snapshot stream (kv.ShardSnapshot.WriteTo)
// whose applied index and term are index and term, with an empty ConfState.
func snapshotStream(t *testing.T, index, term uint64) []byte {
	t.Helper()
	src, err := kv.Open(kv.Config{Dir: "src", FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if err := src.NewApply(0).CommitRaft(index, term, &pb.ConfState{}); err != nil {
		t.Fatal(err)
	}
	ss, err := src.SnapshotShard(0)
	if err != nil {
		t.Fatal(err)
	}
	defer ss.Close()
	var buf bytes.Buffer
	if _, err := ss.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
