// The operator's console: login, session guard and the web UI served beside the JSON API.
export { ConsoleAuth, hashPassword, type LoginResult, type Session } from '../http/auth.ts'
export { registerConsole, SESSION_COOKIE, type ConsoleServerOptions } from './server.ts'
