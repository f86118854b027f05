//! Evaluation: LaunchDarkly's flag semantics, exactly as its SDKs apply them.

use std::borrow::Cow;

use flags_core::context::DEFAULT_KIND;

use flags_core::{
    AttrRef, BigSegmentStore, BigSegmentsStatus, Context, ErrorKind, EvalDetail, Reason,
    SingleContext, Value,
};

use crate::big_segments::BigSegmentState;
use crate::bucket::hash_context;
use crate::compile::{
    CClause, CFlag, COp, CRollout, ClauseAttr, Constant, NO_VARIATION, Outcome, SLOTS,
};
use crate::data::{CompiledData, CompiledFlag, CompiledSegment};

/// Evaluates flags of one snapshot in LaunchDarkly's order: off, prerequisites, targets, rules,
/// fallthrough.
///
/// It evaluates the data as LaunchDarkly's SDKs would, and nothing else: flagd's operations
/// layer (kills and overrides) reaches it inside the served flags (`flags-data`), so it and the
/// SDKs read the same thing. Results borrow from the snapshot; evaluating a flag whose
/// variations are scalars does not allocate.
#[derive(Clone, Copy)]
pub struct Evaluator<'a> {
    data: &'a CompiledData,
    big_segments: Option<&'a dyn BigSegmentStore>,
}

impl std::fmt::Debug for Evaluator<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("big_segments", &self.big_segments.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a> Evaluator<'a> {
    /// An evaluator over a snapshot, with no big-segment store.
    pub fn new(data: &'a CompiledData) -> Evaluator<'a> {
        Evaluator {
            data,
            big_segments: None,
        }
    }

    /// Uses a big-segment store for segments marked `unbounded`. Without one, evaluations that
    /// reach a big segment report `NOT_CONFIGURED` and leave membership to the segment's rules,
    /// as LaunchDarkly's SDKs do.
    pub fn with_big_segments(mut self, store: &'a dyn BigSegmentStore) -> Evaluator<'a> {
        self.big_segments = Some(store);
        self
    }

    /// The snapshot this evaluator reads.
    pub fn data(&self) -> &'a CompiledData {
        self.data
    }

    /// Evaluates a flag by key; an unknown (or deleted) flag gives `ERROR`/`FLAG_NOT_FOUND`.
    pub fn evaluate(&self, flag_key: &str, context: &Context) -> EvalDetail<'a> {
        match self.data.flag(flag_key) {
            Some(flag) => self.evaluate_flag(flag, context),
            None => EvalDetail::error(ErrorKind::FlagNotFound),
        }
    }

    /// Evaluates a flag for a context given as LaunchDarkly JSON; an invalid context gives
    /// `ERROR`/`USER_NOT_SPECIFIED` (as LaunchDarkly's SDKs do), an unknown flag
    /// `ERROR`/`FLAG_NOT_FOUND`.
    pub fn evaluate_json(&self, flag_key: &str, context: &Value) -> EvalDetail<'a> {
        let Some(flag) = self.data.flag(flag_key) else {
            return EvalDetail::error(ErrorKind::FlagNotFound);
        };
        match Context::from_json(context) {
            Ok(ctx) => self.evaluate_flag(flag, &ctx),
            Err(_) => EvalDetail::error(ErrorKind::UserNotSpecified),
        }
    }

    /// [`Evaluator::evaluate`], telling `on_prerequisite` of every prerequisite evaluated on the
    /// way, in the order they were evaluated (nested ones first), as LaunchDarkly's SDKs report
    /// them in analytics events.
    pub fn evaluate_observed(
        &self,
        flag_key: &str,
        context: &Context,
        on_prerequisite: &mut dyn FnMut(PrerequisiteEval<'a>),
    ) -> EvalDetail<'a> {
        match self.data.flag(flag_key) {
            Some(flag) => self.evaluate_flag_observed(flag, context, on_prerequisite),
            None => EvalDetail::error(ErrorKind::FlagNotFound),
        }
    }

    /// [`Evaluator::evaluate_flag`] with [`Evaluator::evaluate_observed`]'s report of
    /// prerequisites.
    pub fn evaluate_flag_observed(
        &self,
        flag: &'a CompiledFlag,
        context: &Context,
        on_prerequisite: &mut dyn FnMut(PrerequisiteEval<'a>),
    ) -> EvalDetail<'a> {
        match flag.c.constant {
            // No prerequisites are evaluated for these: see `evaluate_flag`.
            Some(_) => self.evaluate_flag(flag, context),
            None if flag.c.only_fallthrough => self.evaluate_flag(flag, context),
            None => self.evaluate_rules(flag, context, Some(on_prerequisite)),
        }
    }

    /// Evaluates one compiled flag of this evaluator's snapshot.
    #[inline(always)]
    pub fn evaluate_flag(&self, flag: &'a CompiledFlag, context: &Context) -> EvalDetail<'a> {
        match flag.c.constant {
            Some(Constant::Off) => detail(flag, off(flag, Why::Off)),
            Some(Constant::Fallthrough(v)) => detail(flag, serve(v, Why::FALLTHROUGH)),
            // Nothing but a fallthrough rollout: no other flag or segment can be reached, so
            // there is no chain or big-segment state to keep.
            None if flag.c.only_fallthrough => {
                let res = match &flag.c.fallthrough {
                    Outcome::Rollout(r) => rollout(r, context.as_single(&r.kind), Why::FALLTHROUGH),
                    Outcome::Fixed(v) => serve(*v, Why::FALLTHROUGH),
                    Outcome::Malformed => MALFORMED,
                };
                detail(flag, res)
            }
            None => self.evaluate_rules(flag, context, None),
        }
    }

    fn evaluate_rules<'c>(
        &self,
        flag: &'a CompiledFlag,
        context: &'c Context,
        on_prerequisite: Option<&'c mut dyn FnMut(PrerequisiteEval<'a>)>,
    ) -> EvalDetail<'a> {
        let mut scope = Scope::new(*self, context);
        scope.on_prerequisite = on_prerequisite;
        let mut detail = match scope.eval_flag(flag, None) {
            Ok(res) => detail(flag, res),
            Err(Abort) => EvalDetail::error(ErrorKind::MalformedFlag),
        };
        detail.big_segments_status = scope.big.status;
        detail
    }

    /// Evaluates every live flag for a context, in key order.
    pub fn evaluate_all<'s>(
        &'s self,
        context: &'s Context,
    ) -> impl Iterator<Item = (&'a str, EvalDetail<'a>)> + 's {
        let mut flags: Vec<&'a CompiledFlag> = self.data.flags().collect();
        flags.sort_unstable_by(|a, b| a.key().cmp(b.key()));
        flags
            .into_iter()
            .map(move |f| (f.key(), self.evaluate_flag(f, context)))
    }
}

/// One prerequisite evaluated inside an evaluation (see [`Evaluator::evaluate_observed`]).
#[derive(Debug, Clone)]
pub struct PrerequisiteEval<'a> {
    /// The prerequisite flag.
    pub flag: &'a CompiledFlag,
    /// The flag whose prerequisite it is.
    pub prerequisite_of: &'a CompiledFlag,
    /// Its result, as if it had been evaluated on its own.
    pub detail: EvalDetail<'a>,
}

/// Evaluates a flag by key with no kill set or overrides.
pub fn evaluate<'a>(data: &'a CompiledData, flag_key: &str, context: &Context) -> EvalDetail<'a> {
    Evaluator::new(data).evaluate(flag_key, context)
}

/// Whether an evaluation result should be reported with full event detail, as LaunchDarkly
/// decides it: the reason says `inExperiment`, or the matched rule (or the fallthrough) has
/// event tracking switched on.
pub fn is_experiment(flag: &flags_core::Flag, reason: &Reason<'_>) -> bool {
    crate::data::experiment(reason, flag.track_events_fallthrough, |i| {
        flag.rules.get(i).is_some_and(|r| r.track_events)
    })
}

/// Evaluation stops at once and the whole result becomes `ERROR`/`MALFORMED_FLAG`: a
/// prerequisite or segment cycle, or an invalid attribute reference in a clause.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Abort;

/// How deep prerequisites and nested segments may go before evaluation gives up with
/// MALFORMED_FLAG. Far beyond any real flag, and well within a 2 MiB thread stack.
const MAX_DEPTH: u32 = 200;

/// One key of the chain of flags (or segments) being evaluated, for cycle detection. Links live
/// in the stack frames of the recursion itself, so the chain costs nothing to set up and never
/// touches the heap.
#[derive(Clone, Copy)]
struct Link<'l> {
    key: &'l str,
    parent: Option<&'l Link<'l>>,
    depth: u32,
}

impl<'l> Link<'l> {
    fn contains(mut link: Option<&Link<'_>>, key: &str) -> bool {
        while let Some(l) = link {
            if l.key == key {
                return true;
            }
            link = l.parent;
        }
        false
    }

    fn depth(link: Option<&Link<'_>>) -> u32 {
        link.map_or(0, |l| l.depth)
    }
}

/// The custom attribute values one flag evaluation has looked up, by clause slot
/// ([`CClause::slot`](crate::compile::CClause)). Lives for one evaluation of one flag's rules.
#[derive(Default)]
struct Memo<'c> {
    values: [Option<&'c Value>; SLOTS],
    /// Bit `i` set: `values[i]` has been looked up.
    known: u8,
}

/// One evaluation, prerequisites included: they share the context and what has been learned
/// from the big-segment store, so its status covers the whole evaluation.
struct Scope<'a, 'c> {
    ev: Evaluator<'a>,
    ctx: &'c Context,
    /// The context's `user` context, if any, which most clauses test.
    user: Option<&'c SingleContext>,
    big: BigSegmentState<'c>,
    /// Told of each prerequisite evaluated, when the caller asked.
    on_prerequisite: Option<&'c mut dyn FnMut(PrerequisiteEval<'a>)>,
}

/// The result of evaluating one flag inside an evaluation, small enough to travel in registers.
/// Only the outermost flag's result becomes an [`EvalDetail`] (see [`detail`]), once.
#[derive(Debug, Clone, Copy)]
struct Res {
    /// The variation to serve: [`NO_VARIATION`] for no value; an index past the flag's
    /// variations makes the flag malformed.
    var: u32,
    why: Why,
}

/// The reason of a [`Res`], with rules and prerequisites named by index into the flag.
#[derive(Debug, Clone, Copy)]
enum Why {
    Off,
    Fallthrough { in_experiment: bool },
    Target,
    Rule { index: u32, in_experiment: bool },
    Prerequisite(u32),
    Malformed,
}

impl Why {
    const FALLTHROUGH: Why = Why::Fallthrough {
        in_experiment: false,
    };
}

const MALFORMED: Res = Res {
    var: NO_VARIATION,
    why: Why::Malformed,
};

#[inline(always)]
fn serve(var: u32, why: Why) -> Res {
    Res { var, why }
}

#[inline(always)]
fn off(flag: &CompiledFlag, why: Why) -> Res {
    Res {
        var: flag.c.off,
        why,
    }
}

/// An index into a flag's rules or prerequisites, as a [`Why`] holds it. Flags have far fewer
/// than 2^32 rules; saturating keeps this total.
#[inline(always)]
fn index32(i: usize) -> u32 {
    u32::try_from(i).unwrap_or(u32::MAX)
}

/// Turns the outermost flag's [`Res`] into the detail the caller gets. Each reason is written
/// straight into the result, rather than built apart and moved in.
#[inline(always)]
fn detail(flag: &CompiledFlag, res: Res) -> EvalDetail<'_> {
    let (value, variation_index) = if res.var == NO_VARIATION {
        (None, None)
    } else {
        let index = res.var as usize;
        match flag.variations().get(index) {
            Some(v) => (Some(v), Some(index)),
            None => return EvalDetail::error(ErrorKind::MalformedFlag),
        }
    };
    let with = |reason| EvalDetail {
        value,
        variation_index,
        reason,
        big_segments_status: None,
    };
    match res.why {
        Why::Off => with(Reason::OFF),
        Why::Fallthrough { in_experiment } => with(Reason::Fallthrough { in_experiment }),
        Why::Target => with(Reason::TARGET_MATCH),
        Why::Rule {
            index,
            in_experiment,
        } => {
            let rule_index = index as usize;
            with(Reason::RuleMatch {
                rule_index,
                rule_id: Cow::Borrowed(flag.rule_id(rule_index)),
                in_experiment,
            })
        }
        Why::Prerequisite(i) => with(Reason::PrerequisiteFailed {
            prerequisite_key: Cow::Borrowed(
                flag.c.prerequisites.get(i as usize).map_or("", |p| &*p.key),
            ),
        }),
        Why::Malformed => EvalDetail::error(ErrorKind::MalformedFlag),
    }
}

impl<'a, 'c> Scope<'a, 'c> {
    fn new(ev: Evaluator<'a>, ctx: &'c Context) -> Scope<'a, 'c> {
        Scope {
            ev,
            ctx,
            user: ctx.as_single(DEFAULT_KIND),
            big: BigSegmentState::default(),
            on_prerequisite: None,
        }
    }

    /// `chain` holds the flags whose prerequisites are being checked, innermost first.
    #[inline(always)]
    fn eval_flag(
        &mut self,
        flag: &'a CompiledFlag,
        chain: Option<&Link<'_>>,
    ) -> Result<Res, Abort> {
        // A flag whose result cannot depend on the context costs a compare, wherever it is
        // evaluated (prerequisites are often such flags); the rest is one call away, so this
        // path saves no registers for it.
        match flag.c.constant {
            Some(Constant::Off) => Ok(off(flag, Why::Off)),
            Some(Constant::Fallthrough(v)) => Ok(serve(v, Why::FALLTHROUGH)),
            None => self.eval_targeting(flag, chain),
        }
    }

    /// [`Scope::eval_flag`] for a flag that is on and targets: prerequisites, targets, rules,
    /// then the fallthrough.
    #[inline(never)]
    fn eval_targeting(
        &mut self,
        flag: &'a CompiledFlag,
        chain: Option<&Link<'_>>,
    ) -> Result<Res, Abort> {
        let c: &'a CFlag = &flag.c;
        if !c.prerequisites.is_empty()
            && let Some(failed) = self.check_prerequisites(flag, chain)?
        {
            return Ok(off(flag, Why::Prerequisite(failed)));
        }
        if !c.targets.is_empty()
            && let Some(v) = self.target_match(c)
        {
            return Ok(serve(v, Why::Target));
        }
        if !c.rules.is_empty()
            && let Some(res) = self.match_rules(c)?
        {
            return Ok(res);
        }
        Ok(self.outcome(&c.fallthrough, Why::FALLTHROUGH))
    }

    /// The outcome of the first rule that matches, if any.
    fn match_rules(&mut self, c: &'a CFlag) -> Result<Option<Res>, Abort> {
        let mut memo = Memo::default();
        for (i, rule) in c.rules.iter().enumerate() {
            if self.all_match(&rule.clauses, None, &mut memo)? {
                let why = Why::Rule {
                    index: index32(i),
                    in_experiment: false,
                };
                return Ok(Some(self.outcome(&rule.outcome, why)));
            }
        }
        Ok(None)
    }

    /// `Some(index)` of the first failed prerequisite.
    fn check_prerequisites(
        &mut self,
        flag: &'a CompiledFlag,
        chain: Option<&Link<'_>>,
    ) -> Result<Option<u32>, Abort> {
        let depth = Link::depth(chain) + 1;
        if depth > MAX_DEPTH {
            return Err(Abort);
        }
        let link = Link {
            key: flag.key(),
            parent: chain,
            depth,
        };
        for (i, p) in flag.c.prerequisites.iter().enumerate() {
            let failed = Some(index32(i));
            let Some(pflag) = self.ev.data.flag(&p.key) else {
                return Ok(failed);
            };
            if Link::contains(Some(&link), pflag.key()) {
                return Err(Abort);
            }
            // An off prerequisite is not evaluated past `on` (see `eval_flag`), so nothing it
            // references (big segments included) is consulted.
            let res = self.eval_flag(pflag, Some(&link))?;
            if let Some(observe) = self.on_prerequisite.as_mut() {
                observe(PrerequisiteEval {
                    flag: pflag,
                    prerequisite_of: flag,
                    detail: detail(pflag, res),
                });
            }
            // Met when the prerequisite is on and served the required variation (a value, not
            // an error or the caller's default).
            let served = res.var as usize;
            let ok = pflag.is_on()
                && !matches!(res.why, Why::Malformed)
                && served == p.variation
                && served < pflag.variations().len();
            if !ok {
                return Ok(failed);
            }
        }
        Ok(None)
    }

    fn target_match(&self, c: &CFlag) -> Option<u32> {
        let mut best: Option<(u32, u32)> = None;
        for group in c.targets.iter() {
            let Some(single) = self.ctx.as_single(&group.kind) else {
                continue;
            };
            if let Some(&(order, v)) = group.keys.get(single.key())
                && best.is_none_or(|(o, _)| order < o)
            {
                best = Some((order, v));
            }
        }
        best.map(|(_, v)| v)
    }

    #[inline]
    fn outcome(&mut self, outcome: &'a Outcome, why: Why) -> Res {
        match outcome {
            Outcome::Fixed(v) => serve(*v, why),
            Outcome::Malformed => MALFORMED,
            Outcome::Rollout(r) => {
                let single = if r.user {
                    self.user
                } else {
                    self.ctx.as_single(&r.kind)
                };
                rollout(r, single, why)
            }
        }
    }

    /// `segs` holds the segments whose rules are being checked, innermost first.
    #[inline]
    fn all_match(
        &mut self,
        clauses: &'a [CClause],
        segs: Option<&Link<'_>>,
        memo: &mut Memo<'c>,
    ) -> Result<bool, Abort> {
        for c in clauses {
            let matched = match &c.attr {
                ClauseAttr::Custom(name) => self.custom_matches(c, name, memo),
                _ => self.special_clause_matches(c, segs)?,
            };
            if !matched {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The context of `kind`, using the one found at the start for `user`.
    #[inline(always)]
    fn single(&self, kind: &str) -> Option<&'c SingleContext> {
        if kind == DEFAULT_KIND {
            self.user
        } else {
            self.ctx.as_single(kind)
        }
    }

    /// A clause on a top-level custom attribute: the common case, kept small so it inlines
    /// into the clause loop.
    #[inline(always)]
    fn custom_matches(&self, c: &CClause, name: &str, memo: &mut Memo<'c>) -> bool {
        let slot = usize::from(c.slot);
        let value = match memo.values.get_mut(slot) {
            Some(kept) => {
                let bit = 1u8 << slot;
                if memo.known & bit == 0 {
                    *kept = self.custom_value(c, name);
                    memo.known |= bit;
                }
                *kept
            }
            None => self.custom_value(c, name),
        };
        value_matches(c, value)
    }

    #[inline(always)]
    fn custom_value(&self, c: &CClause, name: &str) -> Option<&'c Value> {
        let single = if c.user {
            self.user
        } else {
            self.ctx.as_single(&c.kind)
        };
        single?.custom_attribute(name)
    }

    /// A clause on a built-in attribute or an attribute path.
    fn attribute_matches(&self, c: &CClause, attr: &AttrRef) -> bool {
        let Some(single) = self.ctx.as_single(&c.kind) else {
            return false;
        };
        value_matches(c, single.get(attr))
    }

    /// Segment matches, the `kind` attribute and invalid references.
    #[inline(never)]
    fn special_clause_matches(
        &mut self,
        c: &'a CClause,
        segs: Option<&Link<'_>>,
    ) -> Result<bool, Abort> {
        match &c.attr {
            ClauseAttr::Segment => {
                if let COp::Segment(keys) = &c.op {
                    for key in keys.iter() {
                        if let Some(seg) = self.ev.data.segment(key)
                            && self.segment_contains(seg, segs)?
                        {
                            return Ok(!c.negate);
                        }
                    }
                }
                Ok(c.negate)
            }
            ClauseAttr::Invalid => Err(Abort),
            ClauseAttr::Kind => {
                let any = self.ctx.contexts().iter().any(|s| kind_matches(&c.op, s));
                Ok(any != c.negate)
            }
            ClauseAttr::Ref(attr) => Ok(self.attribute_matches(c, attr)),
            ClauseAttr::Custom(name) => Ok(value_matches(c, self.custom_value(c, name))),
        }
    }

    fn segment_contains(
        &mut self,
        seg: &'a CompiledSegment,
        segs: Option<&Link<'_>>,
    ) -> Result<bool, Abort> {
        let key = seg.key();
        if Link::contains(segs, key) {
            return Err(Abort);
        }
        let s = &seg.c;
        if let Some((kind, reference)) = &s.big {
            // A big segment's own lists are ignored; the store decides, then the rules.
            if let Some(member) = self.big_segment_membership(kind, reference.as_deref()) {
                return Ok(member);
            }
        } else {
            let user = self.ctx.as_single(DEFAULT_KIND);
            if user.is_some_and(|u| s.included.contains(u.key())) {
                return Ok(true);
            }
            if keyed_in(self.ctx, &s.included_contexts) {
                return Ok(true);
            }
            if user.is_some_and(|u| s.excluded.contains(u.key())) {
                return Ok(false);
            }
            if keyed_in(self.ctx, &s.excluded_contexts) {
                return Ok(false);
            }
        }
        if s.rules.is_empty() {
            return Ok(false);
        }
        let depth = Link::depth(segs) + 1;
        if depth > MAX_DEPTH {
            return Err(Abort);
        }
        let link = Link {
            key,
            parent: segs,
            depth,
        };
        self.segment_rules_match(seg, &link)
    }

    fn segment_rules_match(
        &mut self,
        seg: &'a CompiledSegment,
        link: &Link<'_>,
    ) -> Result<bool, Abort> {
        for rule in seg.c.rules.iter() {
            // Segment clauses have no slots; the memo is only for the flag's own clauses.
            if !self.all_match(&rule.clauses, Some(link), &mut Memo::default())? {
                continue;
            }
            let Some(weight) = rule.weight else {
                return Ok(true);
            };
            let Some(attr) = &rule.bucket_by else {
                return Err(Abort);
            };
            let (hash, _) = hash_context(self.single(&rule.kind), attr, rule.by_key, &rule.prefix);
            if hash < weight {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// `Some(membership)` when that settles it; `None` to go on to the segment's rules. See
    /// `crate::big_segments` for the rules followed.
    fn big_segment_membership(&mut self, kind: &str, reference: Option<&str>) -> Option<bool> {
        let Some(reference) = reference else {
            // Without a generation the store cannot be asked.
            self.big.note(BigSegmentsStatus::NotConfigured);
            return Some(false);
        };
        // Only the segment's own kind can be a member; nothing is asked for other kinds.
        let Some(single) = self.ctx.as_single(kind) else {
            return Some(false);
        };
        self.big
            .check(self.ev.big_segments, single.key(), reference)
    }
}

/// The variation a rollout serves to `single`, the context's part of the rollout's kind (`None`
/// when the context lacks that kind), with `why` marked in the experiment when it is one.
#[inline(always)]
fn rollout(r: &CRollout, single: Option<&SingleContext>, why: Why) -> Res {
    let Some(attr) = &r.bucket_by else {
        return MALFORMED;
    };
    let (hash, had_kind) = hash_context(single, attr, r.by_key, &r.prefix);
    let (var, untracked) = match r.buckets.iter().find(|b| hash < b.1) {
        Some(b) => (b.0, b.2),
        // Past the end of the weights: the last bucket, as LaunchDarkly does.
        None => r
            .buckets
            .last()
            .map_or((NO_VARIATION - 1, true), |b| (b.0, b.2)),
    };
    let in_experiment = r.experiment && !untracked && had_kind;
    let why = match why {
        Why::Fallthrough { .. } => Why::Fallthrough { in_experiment },
        Why::Rule { index, .. } => Why::Rule {
            index,
            in_experiment,
        },
        other => other,
    };
    serve(var, why)
}

/// Whether a clause matches the attribute value found (`None`: the context lacks it).
#[inline(always)]
fn value_matches(c: &CClause, value: Option<&Value>) -> bool {
    match value {
        // A missing attribute never matches, even negated.
        None | Some(Value::Null) => false,
        Some(Value::Array(items)) => c.op.matches_any(items) != c.negate,
        Some(v) => c.op.matches(v) != c.negate,
    }
}

fn kind_matches(op: &COp, single: &SingleContext) -> bool {
    op.matches(single.kind_value())
}

fn keyed_in(ctx: &Context, lists: &[(crate::compile::Kind, crate::compile::StrSet)]) -> bool {
    lists
        .iter()
        .any(|(kind, keys)| ctx.as_single(kind).is_some_and(|s| keys.contains(s.key())))
}
