// The operator's console: the static web UI served beside the JSON API (login and session are cloud/http/).
export { CONSOLE_OPEN_PATHS, registerConsole } from './server.ts'
