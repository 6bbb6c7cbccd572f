// A real headless Chromium for the console tests (playwright-core drives the Debian package
// `chromium`, installed by deploy/setup.sh), and screenshots kept in test-artifacts/console/.
import assert from 'node:assert/strict'
import { existsSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium, type Browser, type Page } from 'playwright-core'
import { consoleLogin } from '../../devkit/index.ts'

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

/** A page of the console at `api` in a fresh Chromium, logged in as `user`; errors: the page's uncaught errors. close() stops the browser. */
export async function consolePage (api: string, user: { user: string, password: string }): Promise<{ page: Page, errors: string[], close: () => Promise<void> }> {
  const browser = await launchChromium()
  const context = await browser.newContext()
  const [name, value] = (await consoleLogin(api, user.user, user.password)).split('=')
  await context.addCookies([{ name, value, url: api }])
  const page = await context.newPage()
  const errors: string[] = []
  page.on('pageerror', (err) => errors.push(err.message))
  return { page, errors, close: () => browser.close() }
}
