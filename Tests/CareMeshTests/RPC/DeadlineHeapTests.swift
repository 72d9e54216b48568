import CareMeshRPC
import Testing

@Suite struct DeadlineHeapTests {
    @Test("pops due entries earliest first, none before their time")
    func order() {
        var heap = DeadlineHeap()
        var g = SystemRandomNumberGenerator()
        let deadlines = (0..<500).map { _ in UInt64.random(in: 1...10_000, using: &g) }
        for (i, d) in deadlines.enumerated() { heap.insert(deadline: d, id: UInt64(i)) }
        #expect(heap.popDue(now: 0) == nil)
        var popped: [UInt64] = []
        while let e = heap.popDue(now: 5_000) { popped.append(e.deadline) }
        #expect(popped == deadlines.filter { $0 <= 5_000 }.sorted())
        #expect(heap.count == deadlines.filter { $0 > 5_000 }.count)
        #expect((heap.next?.deadline ?? 0) > 5_000)
    }

    @Test("prune drops dead ids only once they outnumber the live ones, and keeps the order")
    func prune() {
        var heap = DeadlineHeap()
        for i in 0..<2_000 { heap.insert(deadline: UInt64(10_000 - i), id: UInt64(i)) }
        let live: Set<UInt64> = [5, 500, 1_500]
        heap.prune(live: 1_000) { live.contains($0) }
        #expect(heap.count == 2_000, "under the threshold nothing is swept")
        heap.prune(live: live.count) { live.contains($0) }
        #expect(heap.count == 3)
        var ids: [UInt64] = []
        while let e = heap.popDue(now: .max) { ids.append(e.id) }
        #expect(ids == [1_500, 500, 5])  // earliest deadline first
    }

    @Test("FIFO keeps order across its internal compaction")
    func fifo() {
        var q = FIFO<Int>()
        var expected = 0
        for i in 0..<5_000 {
            q.append(i)
            if i % 3 == 0, let v = q.popFirst() { #expect(v == expected); expected += 1 }
        }
        while let v = q.popFirst() { #expect(v == expected); expected += 1 }
        #expect(expected == 5_000 && q.isEmpty)
    }
}
