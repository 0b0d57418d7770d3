//! Reference simulator: a minimal page-mapped (sector-granular) model of flash GC and data
//! placement, independent of the FTL, to cross-check its WAF numbers.
//!
//! Model: E exported sectors, lines (erase units) of C sectors, L data lines plus one extra
//! line per open stream (spare factor rho = (L*C - E) / E). No timing. Phases as in
//! `lightnvm sim`: a sequential fill of LBAs 0..E, `precondition` capacities of workload
//! writes, then `measure` capacities; WAF = (user + GC sector writes) / user over the measured
//! phase. LBAs come from the crate's own `Picker` and RNG stream, drawn exactly as `run` draws
//! them (the measured phase also draws the read/trim die per request).
//!
//! GC: before a user stream opens a new line, while free lines <= threshold, pick a closed
//! victim (greedy | fifo | cost-benefit), move its valid sectors to a GC stream, erase it.
//!
//! Placement: `none` (user stream + GC stream) or `sepbit` (Wang et al., FAST'22): user
//! writes by the inferred lifespan v = now - previous write time of the LBA (class 1 if
//! v < ell, else class 2, new LBAs class 2); GC writes from class-1 victims to class 3, others
//! by age = now - last user write to class 4 (< 4 ell), 5 (< 16 ell) or 6. ell = mean
//! lifespan (now - open time) of the last 16 collected class-1 lines, recomputed every 16
//! collections (as in the authors' simulator), infinite before. Time = user sector writes.
//!
//! Placement `freq` (ours): one set of 6 streams shared by user and GC writes, by the LBA's
//! predicted rewrite interval x = W / (d + 0.3), where d is its write count since its first
//! write, decayed with time constant tau = 8E, and W = tau (1 - exp(-(now - first) / tau)) the
//! decayed window it covers (x = now - first without decay). A user write counts itself in d
//! before it is classified; a GC move uses d as it is (so x grows with the data's age). The
//! first write of an LBA goes to the coldest stream. Stream k < 5 holds x < E/64 * 4^k,
//! stream 5 the rest. The classifier is memoryless in the data's age, so GC data of a class
//! shares the class's user stream. When a GC stream has no open line and no line is free, it
//! writes to the nearest open stream instead, so one free line in reserve suffices (default
//! --gc-threshold 1).
//!
//! `freq` merges classes whose data dies at the same rate, so that a workload without skew
//! does not pay for open lines it cannot use. Each LBA that has been rewritten at least once
//! is a member of the class it was last written to (user write or GC move); first writes stay
//! out. A class's mean rewrite interval is estimated as its members' exposure (member-time)
//! over their rewrites, the censoring-free estimate for memoryless rewrites, with both sums
//! halved every E/4 user writes. At the end of each such period, after 2E user writes: a class
//! with under 2% of the period's writes has no stream of its own and goes to the nearest class
//! that has; consecutive such classes share a stream once their mean intervals are within a
//! factor 1.25, and part again above 1.5. A stream left without classes hands its open line to
//! the next stream that opens one. Uniform writes end up in one stream (user and GC data).
//!
//! Usage:
//!   refsim --exported E --line-sectors C --lines L --workload SPEC --seed N \
//!          --precondition X --measure X --gc greedy|fifo|cost-benefit \
//!          --placement none|sepbit|freq [--gc-threshold T] [--json] [--check]
//!
//! --gc-threshold: GC runs while free lines <= T before a user line opens (default 2 with
//! placement none, 4 with sepbit, whose 4 GC streams may each open a line per victim, 1 with
//! freq).

use lightnvm_ftl::placement::Freq;
use lightnvm_workload::{lrw_waf, Distribution, Picker};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;

const NONE: u32 = u32::MAX;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Gc {
    Greedy,
    Fifo,
    CostBenefit,
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Placement {
    None,
    SepBit,
    Freq,
}

/// `freq`: streams (classes), shared by user and GC writes. The classifier is the FTL's
/// (`lightnvm_ftl::placement::Freq`): the model runs the same classes on its own GC.
const FREQ_CLASSES: usize = lightnvm_ftl::placement::FREQ_CLASSES;

#[derive(Clone, Debug)]
struct Args {
    exported: u64,
    line_sectors: u32,
    lines: u32,
    workload: String,
    seed: u64,
    precondition: f64,
    measure: f64,
    gc: Gc,
    placement: Placement,
    threshold: u32,
    json: bool,
    check: bool,
}

#[derive(Clone, Copy, PartialEq)]
enum State {
    Free,
    Open,
    Closed,
}

struct Sim {
    c: u32,
    gc: Gc,
    placement: Placement,
    threshold: u32,
    /// LBA -> physical sector (line * C + slot), NONE if unmapped.
    l2p: Vec<u32>,
    /// Physical sector -> LBA, NONE if invalid or unwritten.
    p2l: Vec<u32>,
    valid: Vec<u32>,
    state: Vec<State>,
    class: Vec<u8>,
    open_time: Vec<u64>,
    close_time: Vec<u64>,
    close_seq: Vec<u64>,
    erases: Vec<u32>,
    free: VecDeque<u32>,
    /// Per stream: open line (NONE if none) and its write pointer.
    open: Vec<u32>,
    wp: Vec<u32>,
    /// User sector writes so far (the clock).
    now: u64,
    seq: u64,
    /// Per LBA: time of its last user write (u64::MAX: never written).
    last_write: Vec<u64>,
    user_writes: u64,
    gc_writes: u64,
    gc_runs: u64,
    /// Sector writes per stream (class).
    class_writes: Vec<u64>,
    // SepBIT state.
    ell: f64,
    ell_sum: f64,
    ell_n: u32,
    ell_updates: u64,
    // freq state: the FTL's classifier.
    freq: Box<Freq>,
    borrows: u64,
}

impl Sim {
    fn new(e: u64, c: u32, l: u32, gc: Gc, placement: Placement, threshold: u32) -> Sim {
        let streams = match placement {
            Placement::None => 2,
            Placement::SepBit => 6,
            Placement::Freq => FREQ_CLASSES,
        };
        let t = l + streams as u32;
        assert!(
            (t as u64) * (c as u64) < NONE as u64,
            "too many sectors for u32"
        );
        assert!(
            (l as u64) * (c as u64) > e,
            "no spare space: L*C must exceed E"
        );
        Sim {
            c,
            gc,
            placement,
            threshold,
            l2p: vec![NONE; e as usize],
            p2l: vec![NONE; t as usize * c as usize],
            valid: vec![0; t as usize],
            state: vec![State::Free; t as usize],
            class: vec![0; t as usize],
            open_time: vec![0; t as usize],
            close_time: vec![0; t as usize],
            close_seq: vec![0; t as usize],
            erases: vec![0; t as usize],
            free: (0..t).collect(),
            open: vec![NONE; streams],
            wp: vec![0; streams],
            now: 0,
            seq: 0,
            last_write: vec![u64::MAX; e as usize],
            user_writes: 0,
            gc_writes: 0,
            gc_runs: 0,
            class_writes: vec![0; streams],
            ell: f64::INFINITY,
            ell_sum: 0.0,
            ell_n: 0,
            ell_updates: 0,
            freq: Box::new(Freq::new(e)),
            borrows: 0,
        }
    }

    /// `freq`: a GC stream without an open line writes to the nearest open stream when no
    /// line is free.
    fn gc_stream_with_room(&mut self, stream: usize) -> usize {
        if self.placement != Placement::Freq || self.open[stream] != NONE || !self.free.is_empty() {
            return stream;
        }
        let n = self.open.len();
        for d in 1..n {
            for s in [stream.wrapping_sub(d), stream + d] {
                if s < n && self.open[s] != NONE {
                    self.borrows += 1;
                    return s;
                }
            }
        }
        stream
    }

    fn lines(&self) -> usize {
        self.state.len()
    }

    /// One host write of one sector.
    fn write(&mut self, lba: u32) {
        let stream = match self.placement {
            Placement::None => 0,
            Placement::SepBit => {
                let last = self.last_write[lba as usize];
                if last != u64::MAX && ((self.now - last) as f64) < self.ell {
                    0
                } else {
                    1
                }
            }
            Placement::Freq => {
                self.freq
                    .user(lba as usize, self.last_write[lba as usize], self.now)
            }
        };
        self.invalidate(lba);
        if self.open[stream] == NONE {
            while self.free.len() as u32 <= self.threshold {
                self.collect();
            }
        }
        self.append(stream, lba);
        self.last_write[lba as usize] = self.now;
        self.now += 1;
        self.user_writes += 1;
    }

    fn invalidate(&mut self, lba: u32) {
        let p = self.l2p[lba as usize];
        if p != NONE {
            self.p2l[p as usize] = NONE;
            self.valid[(p / self.c) as usize] -= 1;
            self.l2p[lba as usize] = NONE;
        }
    }

    fn append(&mut self, stream: usize, lba: u32) {
        if self.open[stream] == NONE && self.placement == Placement::Freq {
            // A stream no class maps to any more hands its open line to the next stream
            // that needs one, so merged streams leave no partly written line behind.
            if let Some(s) = (0..self.open.len())
                .find(|&s| self.open[s] != NONE && !self.freq.class_map().contains(&s))
            {
                self.open[stream] = self.open[s];
                self.wp[stream] = self.wp[s];
                self.open[s] = NONE;
            }
        }
        if self.open[stream] == NONE {
            let Some(line) = self.free.pop_front() else {
                eprintln!("refsim: GC ran out of free lines; raise --gc-threshold");
                std::process::exit(3);
            };
            self.state[line as usize] = State::Open;
            self.class[line as usize] = stream as u8;
            self.open_time[line as usize] = self.now;
            self.open[stream] = line;
            self.wp[stream] = 0;
        }
        let line = self.open[stream];
        let p = line * self.c + self.wp[stream];
        self.p2l[p as usize] = lba;
        self.l2p[lba as usize] = p;
        self.valid[line as usize] += 1;
        self.class_writes[stream] += 1;
        self.wp[stream] += 1;
        if self.wp[stream] == self.c {
            self.state[line as usize] = State::Closed;
            self.close_time[line as usize] = self.now;
            self.seq += 1;
            self.close_seq[line as usize] = self.seq;
            self.open[stream] = NONE;
        }
    }

    fn pick_victim(&self) -> u32 {
        let mut best = NONE;
        let mut best_key = (f64::NEG_INFINITY, 0u64);
        let c = self.c as f64;
        for l in 0..self.lines() {
            if self.state[l] != State::Closed {
                continue;
            }
            let v = self.valid[l] as f64;
            // Larger is better; ties go to the older line.
            let score = match self.gc {
                Gc::Greedy => -v,
                Gc::Fifo => 0.0,
                Gc::CostBenefit => {
                    if v == 0.0 {
                        f64::INFINITY
                    } else {
                        let u = v / c;
                        (1.0 - u) / (2.0 * u) * (self.now - self.close_time[l]) as f64
                    }
                }
            };
            let key = (score, u64::MAX - self.close_seq[l]);
            if best == NONE || key > best_key {
                best = l as u32;
                best_key = key;
            }
        }
        assert!(best != NONE, "no closed line to collect");
        best
    }

    fn collect(&mut self) {
        let v = self.pick_victim();
        let vclass = self.class[v as usize];
        if self.placement == Placement::SepBit && vclass == 0 {
            self.ell_sum += (self.now - self.open_time[v as usize]) as f64;
            self.ell_n += 1;
            if self.ell_n == 16 {
                self.ell = self.ell_sum / 16.0;
                self.ell_sum = 0.0;
                self.ell_n = 0;
                self.ell_updates += 1;
            }
        }
        let base = v * self.c;
        for slot in 0..self.c {
            let lba = self.p2l[(base + slot) as usize];
            if lba == NONE {
                continue;
            }
            let stream = match self.placement {
                Placement::None => 1,
                Placement::SepBit => {
                    if vclass == 0 {
                        2
                    } else {
                        let age = (self.now - self.last_write[lba as usize]) as f64;
                        if age < 4.0 * self.ell {
                            3
                        } else if age < 16.0 * self.ell {
                            4
                        } else {
                            5
                        }
                    }
                }
                Placement::Freq => {
                    self.freq
                        .gc(lba as usize, self.last_write[lba as usize], self.now)
                }
            };
            self.p2l[(base + slot) as usize] = NONE;
            self.valid[v as usize] -= 1;
            let stream = self.gc_stream_with_room(stream);
            self.append(stream, lba);
            self.gc_writes += 1;
        }
        debug_assert_eq!(self.valid[v as usize], 0);
        self.state[v as usize] = State::Free;
        self.erases[v as usize] += 1;
        self.free.push_back(v);
        self.gc_runs += 1;
    }

    /// Consistency of the maps and counters (slow; --check).
    fn check(&self) {
        let mut valid = vec![0u32; self.lines()];
        for (lba, &p) in self.l2p.iter().enumerate() {
            if p != NONE {
                assert_eq!(self.p2l[p as usize], lba as u32);
                valid[(p / self.c) as usize] += 1;
            }
        }
        assert_eq!(valid, self.valid);
        let mapped = self.p2l.iter().filter(|&&x| x != NONE).count();
        assert_eq!(mapped as u32, valid.iter().sum::<u32>());
        for l in 0..self.lines() {
            if self.state[l] == State::Free {
                assert_eq!(self.valid[l], 0);
            }
        }
    }
}

struct Outcome {
    rho: f64,
    waf: f64,
    user: u64,
    gc: u64,
    gc_runs: u64,
    erase_min: u32,
    erase_mean: f64,
    erase_max: u32,
    ell: f64,
    ell_updates: u64,
    class_writes: Vec<u64>,
    borrows: u64,
    freq_info: String,
}

fn simulate(a: &Args) -> Result<Outcome, String> {
    let dist = Distribution::parse(&a.workload).map_err(|e| e.to_string())?;
    let e = a.exported;
    let mut sim = Sim::new(e, a.line_sectors, a.lines, a.gc, a.placement, a.threshold);
    // As `lightnvm_workload::run`: the RNG is seeded before the fill, which draws nothing.
    let mut rng = ChaCha8Rng::seed_from_u64(a.seed);
    for lba in 0..e {
        sim.write(lba as u32);
    }
    let mut picker = Picker::new(dist, e, a.seed);
    let pre = (a.precondition * e as f64) as u64;
    for _ in 0..pre {
        let lba = picker.next(&mut rng, 1);
        sim.write(lba as u32);
    }
    if a.check {
        sim.check();
    }
    let (u0, g0) = (sim.user_writes, sim.gc_writes);
    let runs0 = sim.gc_runs;
    let target = (a.measure * e as f64) as u64;
    for _ in 0..target {
        let lba = picker.next(&mut rng, 1);
        // `run` draws the read/trim/write die for every measured request.
        let _kind: u32 = rng.gen_range(0..100u32);
        sim.write(lba as u32);
    }
    if a.check {
        sim.check();
    }
    let user = sim.user_writes - u0;
    let gc = sim.gc_writes - g0;
    let n = sim.erases.len();
    Ok(Outcome {
        rho: (a.lines as f64 * a.line_sectors as f64 - e as f64) / e as f64,
        waf: (user + gc) as f64 / user.max(1) as f64,
        user,
        gc,
        gc_runs: sim.gc_runs - runs0,
        erase_min: *sim.erases.iter().min().unwrap(),
        erase_mean: sim.erases.iter().map(|&x| x as f64).sum::<f64>() / n as f64,
        erase_max: *sim.erases.iter().max().unwrap(),
        ell: sim.ell,
        ell_updates: sim.ell_updates,
        class_writes: sim.class_writes,
        borrows: sim.borrows,
        freq_info: format!(
            "mean_iv/E=[{}] map={:?}",
            sim.freq
                .mean_intervals()
                .iter()
                .map(|m| format!("{:.3}", m / e as f64))
                .collect::<Vec<_>>()
                .join(","),
            sim.freq.class_map()
        ),
    })
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        exported: 0,
        line_sectors: 0,
        lines: 0,
        workload: "uniform".into(),
        seed: 1,
        precondition: 2.0,
        measure: 3.0,
        gc: Gc::Greedy,
        placement: Placement::None,
        threshold: 0,
        json: false,
        check: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--json" => {
                a.json = true;
                continue;
            }
            "--check" => {
                a.check = true;
                continue;
            }
            _ => {}
        }
        let val = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| {
            v.parse::<f64>()
                .map_err(|_| format!("{flag}: bad number {v}"))
        };
        match flag.as_str() {
            "--exported" => a.exported = num(&val)? as u64,
            "--line-sectors" => a.line_sectors = num(&val)? as u32,
            "--lines" => a.lines = num(&val)? as u32,
            "--workload" => a.workload = val,
            "--seed" => a.seed = num(&val)? as u64,
            "--precondition" => a.precondition = num(&val)?,
            "--measure" => a.measure = num(&val)?,
            "--gc-threshold" => a.threshold = num(&val)? as u32,
            "--gc" => {
                a.gc = match val.as_str() {
                    "greedy" => Gc::Greedy,
                    "fifo" => Gc::Fifo,
                    "cost-benefit" => Gc::CostBenefit,
                    _ => return Err(format!("unknown --gc {val}")),
                }
            }
            "--placement" => {
                a.placement = match val.as_str() {
                    "none" => Placement::None,
                    "sepbit" => Placement::SepBit,
                    "freq" => Placement::Freq,
                    _ => return Err(format!("unknown --placement {val}")),
                }
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.exported == 0 || a.line_sectors == 0 || a.lines == 0 {
        return Err("--exported, --line-sectors and --lines are required".into());
    }
    if a.threshold == 0 {
        // Default: 2 free lines; SepBIT's four GC streams can each open a line while one
        // victim is moved, so it keeps 2 more in reserve.
        a.threshold = match a.placement {
            Placement::None => 2,
            Placement::SepBit => 4,
            Placement::Freq => 1,
        };
    }
    Ok(a)
}

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("refsim: {e}");
            std::process::exit(2);
        }
    };
    let o = match simulate(&a) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("refsim: {e}");
            std::process::exit(2);
        }
    };
    let gc = match a.gc {
        Gc::Greedy => "greedy",
        Gc::Fifo => "fifo",
        Gc::CostBenefit => "cost-benefit",
    };
    let placement = match a.placement {
        Placement::None => "none",
        Placement::SepBit => "sepbit",
        Placement::Freq => "freq",
    };
    let lrw = lrw_waf(o.rho);
    if a.json {
        let v = serde_json::json!({
            "workload": a.workload, "gc": gc, "placement": placement,
            "exported": a.exported, "line_sectors": a.line_sectors, "lines": a.lines,
            "gc_threshold": a.threshold, "seed": a.seed,
            "precondition": a.precondition, "measure": a.measure,
            "rho": o.rho, "waf": o.waf, "user_sectors": o.user, "gc_sectors": o.gc,
            "gc_runs": o.gc_runs,
            "erase_count": {"min": o.erase_min, "mean": o.erase_mean, "max": o.erase_max},
            "lrw_waf": lrw, "waf_vs_lrw": o.waf / lrw - 1.0,
            "sepbit_ell": if o.ell.is_finite() { Some(o.ell) } else { None },
            "sepbit_ell_updates": o.ell_updates,
            "class_writes": o.class_writes,
            "gc_borrows": o.borrows,
            "freq_streams": if a.placement == Placement::Freq { Some(&o.freq_info) } else { None },
        });
        println!("{v}");
    } else {
        let mut extra = String::new();
        if a.placement != Placement::None {
            let tot: u64 = o.class_writes.iter().sum();
            let pct: Vec<String> = o
                .class_writes
                .iter()
                .map(|&w| format!("{:.1}", 100.0 * w as f64 / tot.max(1) as f64))
                .collect();
            extra = if a.placement == Placement::SepBit {
                format!(" ell={:.0} classes%=[{}]", o.ell, pct.join(","))
            } else {
                format!(
                    " classes%=[{}] gc_borrows={} {}",
                    pct.join(","),
                    o.borrows,
                    o.freq_info
                )
            };
        }
        if a.gc == Gc::Fifo && a.workload == "uniform" && a.placement == Placement::None {
            extra += &format!(" lrw={:.4} err={:+.2}%", lrw, 100.0 * (o.waf / lrw - 1.0));
        }
        println!(
            "workload={} gc={} placement={} rho={:.4} waf={:.4} erases={}/{:.1}/{}{}",
            a.workload, gc, placement, o.rho, o.waf, o.erase_min, o.erase_mean, o.erase_max, extra
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(workload: &str, gc: Gc, placement: Placement) -> Args {
        Args {
            exported: 20_000,
            line_sectors: 64,
            lines: 360,
            workload: workload.into(),
            seed: 3,
            precondition: 2.0,
            measure: 2.0,
            gc,
            placement,
            threshold: 2,
            json: false,
            check: true,
        }
    }

    #[test]
    fn maps_stay_consistent() {
        for p in [Placement::None, Placement::SepBit, Placement::Freq] {
            for g in [Gc::Greedy, Gc::Fifo, Gc::CostBenefit] {
                let o = simulate(&args("hotcold:80/20", g, p)).unwrap();
                assert!(o.waf >= 1.0);
            }
        }
    }

    #[test]
    fn fifo_uniform_is_near_lrw() {
        let o = simulate(&args("uniform", Gc::Fifo, Placement::None)).unwrap();
        let lrw = lrw_waf(o.rho);
        assert!((o.waf / lrw - 1.0).abs() < 0.05, "{} vs {}", o.waf, lrw);
    }
}
