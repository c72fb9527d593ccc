package multiraft

import "sync"

// scheduler hands queued groups to a fixed set of workers. A group is in
// the queue at most once and never processed by two workers at once: work
// that arrives while a worker holds it marks it to be queued again when the
// worker lets go. A removed replica (replica.removed) is never queued or
// processed again: push refuses it and a worker that takes it from the
// queue skips it; remove waits out a pass in progress.
type scheduler struct {
	mu     sync.Mutex
	cond   *sync.Cond // work queued, or closed
	idle   *sync.Cond // a removed replica's pass ended
	queue  []*replica // FIFO
	head   int
	closed bool
	wg     sync.WaitGroup
}

// per-replica scheduling state, guarded by scheduler.mu.
type schedState struct {
	queued     bool // in the queue or being processed
	processing bool
	again      bool // queued while processing
}

func newScheduler() *scheduler {
	s := &scheduler{}
	s.cond = sync.NewCond(&s.mu)
	s.idle = sync.NewCond(&s.mu)
	return s
}

// start runs n workers, each calling process for the groups it takes.
func (s *scheduler) start(n int, process func(*replica)) {
	for range n {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.worker(process)
		}()
	}
}

// enqueue queues r unless it is queued already.
func (s *scheduler) enqueue(r *replica) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.push(r) {
		s.cond.Signal()
	}
}

// enqueueAll queues every replica in rs with one lock round.
func (s *scheduler) enqueueAll(rs []*replica) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, r := range rs {
		if s.push(r) {
			n++
		}
	}
	if n == 1 {
		s.cond.Signal()
	} else if n > 1 {
		s.cond.Broadcast()
	}
}

// push queues r and reports whether it did; a replica being processed is
// marked to be queued again instead. The caller holds s.mu.
func (s *scheduler) push(r *replica) bool {
	if s.closed || r.removed.Load() {
		return false
	}
	st := &r.sched
	if st.queued {
		if st.processing {
			st.again = true
		}
		return false
	}
	st.queued = true
	s.queue = append(s.queue, r)
	return true
}

func (s *scheduler) worker(process func(*replica)) {
	s.mu.Lock()
	for {
		for !s.closed && s.head == len(s.queue) {
			s.cond.Wait()
		}
		if s.closed {
			s.mu.Unlock()
			return
		}
		r := s.queue[s.head]
		s.queue[s.head] = nil
		s.head++
		if s.head == len(s.queue) {
			s.queue, s.head = s.queue[:0], 0
		}
		if r.removed.Load() {
			r.sched.queued, r.sched.again = false, false
			continue
		}
		r.sched.processing = true
		s.mu.Unlock()

		process(r)

		s.mu.Lock()
		r.sched.processing = false
		if r.removed.Load() {
			// remove may be waiting for this pass; never queue r again.
			r.sched.queued, r.sched.again = false, false
			s.idle.Broadcast()
		} else if r.sched.again {
			r.sched.again = false
			s.queue = append(s.queue, r)
			s.cond.Signal()
		} else {
			r.sched.queued = false
		}
	}
}

// remove returns once no worker processes r, and none ever will again: it
// waits for a pass over r in progress to end. The caller has set
// r.removed, so push refuses r from now on and a worker that takes r from
// the queue skips it. It must not be called from a worker's pass.
func (s *scheduler) remove(r *replica) {
	s.mu.Lock()
	for r.sched.processing {
		s.idle.Wait()
	}
	s.mu.Unlock()
}

// close stops the workers after their current group and waits for them.
func (s *scheduler) close() {
	s.mu.Lock()
	s.closed = true
	s.cond.Broadcast()
	s.mu.Unlock()
	s.wg.Wait()
}
