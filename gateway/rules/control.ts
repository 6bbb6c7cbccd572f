// The control path: evaluates the rules on every ingested event (before its commit: a decision
// never waits for disk, the uplink or the cloud), runs time-based checks on a tick, turns decisions
// into commands and alerts, records every decision in the outbox's priority lane, and hot-reloads
// the rule set from its file or from the cloud.
import { readFileSync, statSync, unwatchFile, watchFile } from 'node:fs'
import type { CommandTracker } from './command-tracker.ts'
import type { GatewayConfig } from '../config.ts'
import type { Logger } from '../log.ts'
import type { GatewayMetrics } from '../metrics.ts'
import type { IncomingControl, IncomingEvent } from '../store/outbox-types.ts'
import { RuleEngine, type Decision } from './engine.ts'
import { parseRuleSetText, RulesError } from '../../proto/rules/schema.ts'
import { Lifecycle } from '../../lib/lifecycle.ts'

export type RulesSource = 'none' | 'file' | 'cloud'

export class Control extends Lifecycle {
  private engine: RuleEngine | null = null
  source: RulesSource = 'none'
  private tickTimer: NodeJS.Timeout | null = null
  private fileMtime = 0
  /** Recent decision latencies (ms), a bounded ring for the heartbeat's p99. */
  private readonly recent = new Float64Array(1024)
  private recentCount = 0

  constructor (
    private readonly cfg: GatewayConfig['rules'],
    private readonly tracker: CommandTracker,
    private readonly record: (ev: IncomingControl) => void,
    private readonly log: Logger,
    private readonly metrics: GatewayMetrics,
  ) {
    super()
  }

  /** Loads the rules file (a bad file at start is an error: GW_ERR_RULES) and starts the tick and the file watch. */
  start (): void {
    if (this.cfg.file) {
      const file = this.cfg.file
      this.load(readFileSync(file, 'utf8'), 'file', true)
      this.fileMtime = statSync(file).mtimeMs
      watchFile(file, { interval: this.cfg.watchMs, persistent: false }, (cur) => {
        if (cur.mtimeMs === this.fileMtime || cur.mtimeMs === 0) return
        this.fileMtime = cur.mtimeMs
        try {
          this.load(readFileSync(file, 'utf8'), 'file')
        } catch (err) {
          this.log.error({ err, file }, 'cannot read the rules file; the running rules stay')
        }
      })
    }
    this.tickTimer = setInterval(() => { if (this.engine) this.apply(this.engine.tick(), performance.now()) }, this.cfg.tickMs)
    this.tickTimer.unref()
  }

  /** Version of the running rule set ('' when none). */
  get version (): string { return this.engine?.version ?? '' }

  /**
   * Parses and applies a rule set. A bad one leaves the running rules in place and says why
   * (returns the error); with `strict` (start-up) it throws.
   */
  load (text: string, source: Exclude<RulesSource, 'none'>, strict = false): RulesError | null {
    try {
      const set = parseRuleSetText(text, source === 'file' ? (this.cfg.file ?? 'rules file') : 'cloud rule set')
      const previous = this.version
      if (this.engine) {
        const swap = this.engine.replaceRuleSet(set)
        if (swap.droppedActive.length > 0) this.log.warn({ dropped: swap.droppedActive }, 'rules that had fired were changed or removed: their clear actions will not run')
        this.log.info({ version: swap.version, previousVersion: previous, source, added: swap.added, changed: swap.changed, removed: swap.removed }, 'rule set reloaded')
      } else {
        this.engine = new RuleEngine(set, { now: Date.now })
        this.log.info({ version: set.version, source, rules: set.rules.length }, 'rule set loaded')
      }
      this.metrics.rulesInfo.reset()
      this.metrics.rulesInfo.set({ version: set.version, source }, 1)
      this.metrics.rulesReloads.inc({ source, result: 'ok' })
      this.source = source
      return null
    } catch (err) {
      if (!(err instanceof RulesError)) throw err
      this.metrics.rulesReloads.inc({ source, result: 'invalid' })
      if (strict) throw err
      this.log.error({ err, source, version: this.version }, 'invalid rule set refused; the running rules stay')
      return err
    }
  }

  /** Runs on the ingest path for every new reading (not for a resend), once it is queued for commit; t0 = when its publish arrived (performance.now()). */
  onEvent (ev: IncomingEvent, t0: number): void {
    if (!this.engine) return
    const decisions = this.engine.evaluate(ev)
    if (decisions.length > 0) this.apply(decisions, t0)
  }

  private apply (decisions: readonly Decision[], t0: number): void {
    if (decisions.length === 0 || this.isClosing) return
    for (const d of decisions) {
      for (const a of d.actions) {
        if ('command' in a) {
          this.tracker.send({ deviceId: a.command.device, name: a.command.name, args: a.command.args, ttlMs: a.command.ttlMs, origin: { source: 'rule', ruleId: d.ruleId, ruleSetVersion: d.ruleSetVersion } })
        }
      }
      // Measured once the commands are handed to the broker: this is what the actuator waits for.
      const ms = performance.now() - t0
      this.metrics.decisionSeconds.observe(ms / 1000)
      this.metrics.decisions.inc({ kind: d.kind })
      this.recent[this.recentCount++ % this.recent.length] = ms
      const base = { eventTsMs: d.atMs, ingestTsMs: d.atMs, subjectDeviceId: d.trigger.deviceId, ruleId: d.ruleId, ruleSetVersion: d.ruleSetVersion }
      this.record({ ...base, kind: 'decision', message: d.kind, durationMs: ms, detailJson: JSON.stringify({ trigger: d.trigger, actions: d.actions, evalMicros: d.evalMicros }) })
      for (const a of d.actions) {
        if ('raiseAlert' in a) this.record({ ...base, kind: 'alert_raised', alertId: a.raiseAlert.id, severity: a.raiseAlert.severity, message: a.raiseAlert.message })
        else if ('clearAlert' in a) this.record({ ...base, kind: 'alert_cleared', alertId: a.clearAlert.id })
      }
    }
  }

  /** p99 of the recent decision latencies in ms (0 when none). */
  decisionP99 (): number {
    const n = Math.min(this.recentCount, this.recent.length)
    if (n === 0) return 0
    const sorted = Array.from(this.recent.subarray(0, n)).sort((a, b) => a - b)
    return sorted[Math.min(n - 1, Math.floor(n * 0.99))]
  }

  protected onClose (): void {
    if (this.tickTimer) clearInterval(this.tickTimer)
    if (this.cfg.file) unwatchFile(this.cfg.file)
  }

  protected onDestroy (): void {
    this.onClose()
  }
}
