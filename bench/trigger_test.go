package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"
)

func TestAwaitArrival(t *testing.T) {
	ack := time.Now()
	got := make(chan arrival, 4)
	got <- arrival{"fl/0", ack.Add(time.Second)} // a late arrival of an earlier sample
	got <- arrival{"fl/1", ack.Add(-time.Millisecond)}
	if at, ok := awaitArrival(got, "fl/1", ack, time.Second); !ok || !at.Equal(ack.Add(-time.Millisecond)) {
		t.Errorf("got %v, %v; want 1ms before the ack, true", at.Sub(ack), ok)
	}
	// The timeout counts from the acknowledgement (not from the call).
	if _, ok := awaitArrival(got, "fl/3", ack, 20*time.Millisecond); ok {
		t.Error("a key never sent arrived")
	}
	if time.Since(ack) < 20*time.Millisecond {
		t.Error("returned before the timeout")
	}
	close(got)
	if _, ok := awaitArrival(got, "fl/4", ack, time.Second); ok {
		t.Error("arrived on a closed channel")
	}
}

func TestSampleLatencyCountsLost(t *testing.T) {
	got := make(chan arrival, 10)
	put := func(_ context.Context, k string) error {
		if k != "fl/2" { // fl/2 never reaches the subscriber
			got <- arrival{k, time.Now().Add(time.Millisecond)}
		}
		return nil
	}
	ls, err := sampleLatency(context.Background(), 4, 20*time.Millisecond, put, got, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls.FromAck) != 3 || len(ls.FromSend) != 3 || ls.Lost != 1 {
		t.Fatalf("got %d samples, %d lost; want 3, 1", len(ls.FromAck), ls.Lost)
	}
	for i := range ls.FromAck {
		if ls.FromAck[i] > ls.FromSend[i] {
			t.Errorf("sample %d: %v from the ack > %v from the send", i, ls.FromAck[i], ls.FromSend[i])
		}
	}
	// Received before the acknowledgement: 0.
	early := func(_ context.Context, k string) error {
		got <- arrival{k, time.Now()}
		time.Sleep(2 * time.Millisecond)
		return nil
	}
	ls, err = sampleLatency(context.Background(), 2, time.Second, early, got, io.Discard)
	if err != nil || ls.BeforeAck != 2 || ls.FromAck[0] != 0 || ls.FromAck[1] != 0 {
		t.Errorf("received before the ack: %+v, %v", ls, err)
	}
	_, err = sampleLatency(context.Background(), 2, 10*time.Millisecond, func(context.Context, string) error { return nil }, got, io.Discard)
	if err == nil {
		t.Error("no error when every sample was lost")
	}
	_, err = sampleLatency(context.Background(), 2, 10*time.Millisecond, func(context.Context, string) error { return errors.New("down") }, got, io.Discard)
	if err == nil {
		t.Error("no error for a failed put")
	}
}

func TestStreamPacesPuts(t *testing.T) {
	const n, rate = 60, 1000.0
	var mu sync.Mutex
	seen := map[int]int{}
	fail := map[int]bool{7: true}
	s := startStream(context.Background(), n, rate, 4, func(_ context.Context, w, i int) error {
		mu.Lock()
		defer mu.Unlock()
		if fail[i] {
			fail[i] = false
			return fmt.Errorf("transient")
		}
		seen[i]++
		return nil
	})
	<-s.done
	if s.err != nil {
		t.Fatal(s.err)
	}
	if len(seen) != n || s.acked.Load() != n {
		t.Fatalf("%d distinct puts, %d acknowledged; want %d", len(seen), s.acked.Load(), n)
	}
	for i, c := range seen {
		if c != 1 {
			t.Errorf("put %d succeeded %d times", i, c)
		}
	}
	// Put n-1 is due (n-1)/rate after the first.
	if d := s.last.Sub(s.start); d < time.Duration(float64(n-1)/rate*float64(time.Second)) {
		t.Errorf("all %d puts done in %v: faster than %v/s", n, d, rate)
	}
}

func TestStreamFails(t *testing.T) {
	s := startStream(context.Background(), 20, 10000, 2, func(_ context.Context, w, i int) error {
		if i == 5 {
			return errors.New("down")
		}
		return nil
	})
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the stream did not end")
	}
	if s.err == nil {
		t.Error("no error for a put that keeps failing")
	}
}
