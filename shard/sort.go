package shard

import "slices"

func sortRecords(rs []Record) {
	slices.SortFunc(rs, func(a, b Record) int {
		switch {
		case a.Key < b.Key:
			return -1
		case a.Key > b.Key:
			return 1
		}
		return 0
	})
}
