// The UI's two languages. Every text the page shows has a key here; a message element
// remembers its key and values (say), so that the switch says it again.
export const STRINGS = {
  en: {
    skip: "Skip to the task table", subtitle: "Background tasks through Celery, RabbitMQ (direct) or synchronously",
    connecting: "connecting…", live: "live", reconnecting: "reconnecting…", overview: "Overview",
    inProgress: "Running", waiting: "Waiting", done: "Done", failed: "Failed",
    queues: "Broker queues (ready / unacked)", workers: "Workers and consumers",
    brokerAge: "as the broker counted them {s} s ago (its figures lag a few seconds)",
    sendTitle: "Send a task", chooseMethod: "Method",
    celeryTitle: "Celery", recommended: "recommended", rabbitTitle: "RabbitMQ", direct: "direct",
    syncTitle: "Sync", waits: "waits for the result",
    celeryDesc: "A worker pool with retries and revocation: the guide's way, and the best default.",
    rabbitDesc: "Published straight to a durable queue; a pika consumer runs it.",
    syncDesc: "The request waits until the task is done and shows its result.",
    sendCelery: "Send via Celery", sendRabbit: "Send via RabbitMQ", sendSync: "Send synchronously",
    duration: "Duration, s", kind: "Kind", numbers: "Numbers", failures: "Simulated failures", label: "Label",
    taskStatus: "Task status", method: "Method", status: "Status", all: "all", worker: "Worker", attempts: "Attempts",
    queueWait: "Queue wait", runTime: "Run time", created: "Created", actions: "Actions",
    noTasks: "No tasks match these filters.", noTasksYet: "No tasks yet. Send one above: it shows up here as it runs.",
    newer: "← Newer", older: "Older →", close: "Close", cancel: "Cancel",
    details: "Details of task", page: "{from}–{to} of {total}", count: "{n} tasks", count1: "1 task",
    accepted: "Task {num} accepted: {status}", finished: "Task {num}: {status}",
    stillRunning: "Task {num} is still running (the wait ended); it stays in the table.",
    rateLimited: "Too many requests: try again in {s} s.", brokerDown: "The broker is unavailable: {detail}",
    invalid: "Invalid input: {detail}", failedReq: "Request failed ({code}): {detail}", network: "Network error: {detail}",
    cancelled: "Task {num} cancelled.", noWorkers: "none online", statsUnknown: "unknown",
    fParams: "Parameters", fResult: "Result", fError: "Error", fWorker: "Worker", fAttempts: "Attempts",
    fCreated: "Created", fStarted: "Started", fFinished: "Finished", fUpdated: "Updated", fId: "Id", fLabel: "Label",
    online: "online", offline: "offline", onlineUnknown: "online status unknown", noWorkersSeen: "none seen",
    runningDone: "{running} running, {done} done", moreOffline: "+{n} more offline in the last hour",
    k8sTitle: "Worker pods on Kubernetes", k8sReady: "{ready} of {desired} ready",
    k8sAuto: "{kind} {name}: {min}–{max} pods, wants {desired}",
    k8sFixed: "fixed count (kubectl scale)", k8sRestarts: "{n} restarts",
    k8sOwned: "an autoscaler owns the count", k8sNoScale: "scaling from the UI is off (api.kubernetes.scaleFromUi)",
    k8sLess: "One pod fewer", k8sMore: "One pod more", k8sTerminating: "terminating",
    sec: "s", syncBadge: "Sync", waitingSync: "Waiting for the result…", elapsed: "{s} of {total} s",
    st_PENDING: "PENDING", st_IN_PROGRESS: "IN_PROGRESS", st_RETRYING: "RETRYING",
    st_DONE: "DONE", st_FAILED: "FAILED", st_CANCELLED: "CANCELLED",
    activity: "Activity", windowLabel: "Time span", min: "{n} min",
    timelineTitle: "Timeline", timelineHint: "Each bar is a task on the worker that ran it, from start to end; the pale line under it is its time in the queue.",
    throughputTitle: "Throughput and queue depth",
    noActivity: "Nothing in the last {n} min. Send a few tasks and watch them spread over the workers.",
    chartsOff: "The charts could not load ({detail}); the table below still works.",
    queueLane: "queue: {name}", queuedFor: "queued {s} s", ranFor: "ran {s} s", runningFor: "running for {s} s",
    waitingFor: "waiting for {s} s", now: "now", ago: "−{v}", laneSummary: "{lane}: {running} running, {done} done, {failed} failed",
    waitingSummary: "{n} waiting in the queues", tasksShown: "{n} of {total} tasks shown (the newest)",
    sSubmitted: "submitted", sFinished: "finished", sFailed: "failed", sWaiting: "waiting (queue depth)", sRunning: "running",
    perBucket: "per {s} s", legendQueued: "in the queue",
  },
  ru: {
    skip: "Перейти к таблице задач", subtitle: "Фоновые задачи через Celery, RabbitMQ (напрямую) или синхронно",
    connecting: "подключение…", live: "онлайн", reconnecting: "переподключение…", overview: "Обзор",
    inProgress: "Выполняются", waiting: "В ожидании", done: "Готово", failed: "С ошибкой",
    queues: "Очереди брокера (готово / без подтверждения)", workers: "Воркеры и консьюмеры",
    brokerAge: "по подсчёту брокера {s} с назад (его данные отстают на несколько секунд)",
    sendTitle: "Отправить задачу", chooseMethod: "Метод",
    celeryTitle: "Celery", recommended: "рекомендуется", rabbitTitle: "RabbitMQ", direct: "напрямую",
    syncTitle: "Синхронно", waits: "ждёт результат",
    celeryDesc: "Пул воркеров с повторами и отменой: способ из руководства и лучший выбор по умолчанию.",
    rabbitDesc: "Публикуется прямо в надёжную очередь; выполняет консьюмер на pika.",
    syncDesc: "Запрос ждёт, пока задача выполнится, и показывает результат.",
    sendCelery: "Отправить через Celery", sendRabbit: "Отправить через RabbitMQ", sendSync: "Отправить синхронно",
    duration: "Длительность, с", kind: "Тип", numbers: "Числа", failures: "Имитация сбоев", label: "Метка",
    taskStatus: "Статус задач", method: "Метод", status: "Статус", all: "все", worker: "Воркер", attempts: "Попытки",
    queueWait: "Ожидание", runTime: "Выполнение", created: "Создана", actions: "Действия",
    noTasks: "Нет задач с такими фильтрами.", noTasksYet: "Задач пока нет. Отправьте задачу выше: она появится здесь и будет обновляться.",
    newer: "← Новее", older: "Старше →", close: "Закрыть", cancel: "Отменить",
    details: "Подробности задачи", page: "{from}–{to} из {total}", count: "задач: {n}", count1: "1 задача",
    accepted: "Задача {num} принята: {status}", finished: "Задача {num}: {status}",
    stillRunning: "Задача {num} ещё выполняется (ожидание истекло); она остаётся в таблице.",
    rateLimited: "Слишком много запросов: повторите через {s} с.", brokerDown: "Брокер недоступен: {detail}",
    invalid: "Неверные данные: {detail}", failedReq: "Ошибка запроса ({code}): {detail}", network: "Ошибка сети: {detail}",
    cancelled: "Задача {num} отменена.", noWorkers: "нет в сети", statsUnknown: "неизвестно",
    fParams: "Параметры", fResult: "Результат", fError: "Ошибка", fWorker: "Воркер", fAttempts: "Попытки",
    fCreated: "Создана", fStarted: "Начата", fFinished: "Завершена", fUpdated: "Обновлена", fId: "Id", fLabel: "Метка",
    online: "в сети", offline: "не в сети", onlineUnknown: "в сети ли — неизвестно", noWorkersSeen: "пока не было",
    runningDone: "выполняется {running}, готово {done}", moreOffline: "ещё {n} не в сети за последний час",
    k8sTitle: "Поды воркеров в Kubernetes", k8sReady: "готово {ready} из {desired}",
    k8sAuto: "{kind} {name}: {min}–{max} подов, хочет {desired}",
    k8sFixed: "число задано вручную (kubectl scale)", k8sRestarts: "перезапусков: {n}",
    k8sOwned: "числом подов управляет автоскейлер", k8sNoScale: "масштабирование из интерфейса выключено (api.kubernetes.scaleFromUi)",
    k8sLess: "На один под меньше", k8sMore: "На один под больше", k8sTerminating: "завершается",
    sec: "с", syncBadge: "Синхронно", waitingSync: "Ждём результат…", elapsed: "{s} из {total} с",
    st_PENDING: "ожидает", st_IN_PROGRESS: "выполняется", st_RETRYING: "повтор",
    st_DONE: "готово", st_FAILED: "ошибка", st_CANCELLED: "отменена",
    activity: "Активность", windowLabel: "Период", min: "{n} мин",
    timelineTitle: "Хронология", timelineHint: "Каждая полоса — задача на воркере, который её выполнил, от начала до конца; бледная линия под ней — время в очереди.",
    throughputTitle: "Пропускная способность и очередь",
    noActivity: "За последние {n} мин ничего не было. Отправьте несколько задач и посмотрите, как они распределятся по воркерам.",
    chartsOff: "Графики не загрузились ({detail}); таблица ниже работает.",
    queueLane: "очередь: {name}", queuedFor: "в очереди {s} с", ranFor: "выполнялась {s} с", runningFor: "выполняется {s} с",
    waitingFor: "ждёт {s} с", now: "сейчас", ago: "−{v}", laneSummary: "{lane}: выполняется {running}, готово {done}, с ошибкой {failed}",
    waitingSummary: "в очередях ждут: {n}", tasksShown: "показано {n} из {total} задач (самые новые)",
    sSubmitted: "отправлено", sFinished: "завершено", sFailed: "с ошибкой", sWaiting: "ждут (глубина очереди)", sRunning: "выполняются",
    perBucket: "за {s} с", legendQueued: "в очереди",
  },
};

const LANG_KEY = "tasklab.lang";
export let lang = localStorage.getItem(LANG_KEY) === "ru" ? "ru" : "en";
const listeners = [];

export function t(key, vars = {}) {
  const s = STRINGS[lang][key] ?? STRINGS.en[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ""));
}
/** A status as shown (the code itself in English); the code stays in class names. */
export function stText(status) { return t(`st_${status}`); }
const METHOD = { celery: "Celery", rabbitmq: "RabbitMQ" };
export function methodLabel(method) { return method === "sync" ? t("syncBadge") : (METHOD[method] || method); }

/** Put a message in a node, remembering it so that a language switch says it again. */
export function say(node, key, vars = {}) {
  node.dataset.key = key; node.dataset.vars = JSON.stringify(vars);
  node.textContent = t(key, vars.status ? { ...vars, status: stText(vars.status) } : vars);
}
export function unsay(node) { delete node.dataset.key; delete node.dataset.vars; node.textContent = ""; }

/** Called after every switch (and once at start), to render again. */
export function onLanguage(fn) { listeners.push(fn); }
export function applyLanguage() {
  document.documentElement.lang = lang;
  document.querySelectorAll("[data-i18n]").forEach((n) => { n.textContent = t(n.dataset.i18n); });
  document.querySelectorAll("[data-i18n-label]").forEach((n) => n.setAttribute("aria-label", t(n.dataset.i18nLabel)));
  document.querySelectorAll("[data-key]").forEach((n) => say(n, n.dataset.key, JSON.parse(n.dataset.vars || "{}")));
  listeners.forEach((fn) => fn());
}
export function switchLanguage() {
  lang = lang === "en" ? "ru" : "en";
  localStorage.setItem(LANG_KEY, lang);
  applyLanguage();
}
