package rafttest

import (
	"bytes"
	"fmt"
	"sync/atomic"

	pb "go.etcd.io/raft/v3/raftpb"

	"lambdadb/kv"
	"lambdadb/multiraft"
)

// KV is a state machine storing "key\x00value" proposals as records of a
// shard, with the entry's index as the version and as the result.
type KV struct {
	eng     *kv.Engine
	shard   int
	applied atomic.Uint64
}

// NewKV opens shard's state machine on eng.
func NewKV(eng *kv.Engine, shard int) (*KV, error) {
	a, err := eng.Applied(shard)
	if err != nil {
		return nil, err
	}
	s := &KV{eng: eng, shard: shard}
	s.applied.Store(a)
	return s, nil
}

// Put returns the payload of a put of key.
func Put(key, value string) []byte { return []byte(key + "\x00" + value) }

// Applied implements multiraft.StateMachine.
func (s *KV) Applied() uint64 { return s.applied.Load() }

// Apply implements multiraft.StateMachine.
func (s *KV) Apply(ents []multiraft.Entry, cs *pb.ConfState) {
	if ents[len(ents)-1].Index <= s.applied.Load() {
		return
	}
	a := s.eng.NewApply(s.shard)
	defer a.Close()
	for i := range ents {
		en := &ents[i]
		if en.Index <= s.applied.Load() || en.Data == nil {
			continue
		}
		k, v, ok := bytes.Cut(en.Data, []byte{0})
		if !ok {
			en.Result = fmt.Errorf("rafttest: bad payload")
			continue
		}
		if err := a.Put(k, v, en.Index); err != nil {
			panic(err)
		}
		en.Result = en.Index
	}
	last := ents[len(ents)-1]
	if err := a.CommitRaft(last.Index, last.Term, cs); err != nil {
		panic(err)
	}
	s.applied.Store(last.Index)
}

// Restored implements multiraft.StateMachine.
func (s *KV) Restored(index uint64) { s.applied.Store(index) }

// Get reads key.
func (s *KV) Get(key string) (string, bool) {
	r, ok, err := s.eng.Get(s.shard, []byte(key))
	if err != nil || !ok {
		return "", false
	}
	return string(r.Value), true
}
