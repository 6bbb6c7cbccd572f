// A real headless Chromium for the console tests (playwright-core drives the Debian package
// `chromium`, installed by deploy/setup.sh), and screenshots kept in test-artifacts/console/.
import assert from 'node:assert/strict'
import { existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium, type Browser, type Page } from 'playwright-core'

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const ARTIFACTS = fileURLToPath(new URL('../../test-artifacts/console/', import.meta.url))

/** Launches Chromium headless, without network extras (no updates, sync or QUIC). */
export async function launchChromium (): Promise<Browser> {
  assert.ok(existsSync(CHROMIUM), `no browser at ${CHROMIUM}: apt-get install chromium (or set CHROMIUM_PATH)`)
  mkdirSync(ARTIFACTS, { recursive: true })
  return chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'] })
}

/** Saves a full-page screenshot as test-artifacts/console/<name>.png. */
export async function shot (page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true })
}
